"""The cold-start protocol (`genrec prepare --new-items`), the slices by kind of user, the ranking among new
items only, and `genrec benchmark` reporting them for every model (baselines and the LLM)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_synthetic

from generative_rec.data import PrepareConfig, RecData, prepare
from generative_rec.errors import ConfigError
from generative_rec.evaluation.metrics import accuracy
from generative_rec.evaluation.slices import (
    HISTORY_BUCKETS,
    bucket_name,
    new_only_exclusions,
    rank_among_new,
    slice_masks,
    slice_means,
)


def _prepare(raw, out, **kw) -> RecData:
    inter, items = raw
    return RecData(prepare(PrepareConfig(
        source="table", output=str(out), attribute_field="genres",
        table={"path": str(inter), "user": "user", "item": "item", "timestamp": "ts", "items_path": str(items),
               "item_id": "item_id", "title": "title", "item_fields": ["genres"]}, **kw)))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("raw"), n_users=60, n_items=50)


@pytest.fixture(scope="module")
def standard(raw, tmp_path_factory) -> RecData:
    return _prepare(raw, tmp_path_factory.mktemp("std") / "d")


@pytest.fixture(scope="module")
def cold(raw, tmp_path_factory) -> RecData:
    return _prepare(raw, tmp_path_factory.mktemp("cold") / "d", new_items=0.2, new_items_seed=3)


def test_new_items_leave_every_training_part_but_keep_the_targets(standard, cold):
    c = cold.cold_start
    new = set(c["new_items"])
    assert c["num_new_items"] == len(new) == round(0.2 * standard.num_items)
    # the catalogue (ids, order, text) is the standard protocol's: new items keep their text
    assert cold.item_ids == standard.item_ids and cold.texts == standard.texts
    for u in range(cold.num_users):
        assert not new & {cold.item_ids[i] for i in cold.train_sequence(u)}
    # the leave-one-out targets are unchanged for every kept user; only training parts shrink
    std = {uid: standard.sequences[n] for n, uid in enumerate(standard.user_ids)}
    removed = 0
    for u, uid in enumerate(cold.user_ids):
        s, full = cold.sequences[u], std[uid]
        assert list(s[-2:]) == list(full[-2:])
        assert [i for i in full[:-2] if standard.item_ids[i] not in new] == list(s[:-2])
        removed += len(full) - len(s)
    dropped = [uid for uid in std if uid not in set(cold.user_ids)]
    removed += sum(len(std[uid]) for uid in dropped)
    assert c["dropped_users"] == len(dropped)
    assert c["removed_interactions"] == removed - sum(len(std[uid]) for uid in dropped) + sum(
        len([i for i in std[uid] if standard.item_ids[i] in new]) for uid in dropped)
    tests = [cold.item_ids[e.target] for e in cold.examples("test")]
    valids = [cold.item_ids[e.target] for e in cold.examples("valid")]
    assert c["test_targets_new"] == sum(t in new for t in tests) > 0
    assert c["valid_targets_new"] == sum(t in new for t in valids)
    # every held-out item is "new" for evaluation: no training interaction at all
    assert all(cold.new_items[cold.item_to_idx[i]] for i in new)
    assert "cold start" in cold.meta["split"]


def test_the_draw_is_seeded(raw, tmp_path, cold):
    again = _prepare(raw, tmp_path / "a", new_items=0.2, new_items_seed=3)
    other = _prepare(raw, tmp_path / "b", new_items=0.2, new_items_seed=4)
    assert again.cold_start["new_items"] == cold.cold_start["new_items"]
    assert other.cold_start["new_items"] != cold.cold_start["new_items"]
    with pytest.raises(ConfigError, match="new_items"):
        PrepareConfig(new_items=1.0)


def test_slices_partition_the_users_and_average_their_values(cold):
    users = np.arange(cold.num_users)
    masks = slice_masks(cold, users)
    assert (masks["new target"] ^ masks["known target"]).all()
    buckets = np.stack([masks[bucket_name(lo, hi)] for lo, hi in HISTORY_BUCKETS])
    assert (buckets.sum(0) == 1).all()  # every user in exactly one history bucket
    lengths = np.array([len(cold.history(u, "test")) for u in users])
    assert (masks["history 4-10"] == ((lengths >= 4) & (lengths <= 10))).all()
    targets = np.array([e.target for e in cold.examples("test")])
    assert (masks["new target"] == cold.new_items[targets]).all()
    vals = np.random.default_rng(0).random(len(users))
    out = slice_means({"NDCG@10": vals}, masks, ["NDCG@10"])
    assert out["new target"]["users"] == masks["new target"].sum()
    assert out["new target"]["NDCG@10"] == pytest.approx(vals[masks["new target"]].mean())
    assert out["history >50"] == {"users": 0, "NDCG@10": None}


def test_ranking_among_new_items_only(cold):
    """A model that prefers known items still returns only new items here, and the metrics are those of the
    restricted lists (recomputed by hand)."""
    users = np.arange(cold.num_users)
    known = ~cold.new_items
    rng = np.random.default_rng(1)
    table = rng.random((cold.num_users, cold.num_items)) + known * 10.0  # every known item first

    def score(u, hist):
        return table[np.asarray(u)]

    res = rank_among_new(score, cold, users, ks=(1, 5, 10))
    sel = users[slice_masks(cold, users)["new target"]]
    assert res["users"] == len(sel) > 0 and res["candidates"] == int(cold.new_items.sum())
    lists = []
    for u in sel:
        s = np.where(cold.new_items, table[u], -np.inf)
        s[cold.history(int(u), "test")] = -np.inf
        order = [int(i) for i in np.argsort(-s, kind="stable") if s[i] > -np.inf][:10]
        lists.append(order + [-1] * (10 - len(order)))
    targets = np.array([cold.sequences[u][-1] for u in sel])
    expect = accuracy(np.array(lists), targets, (1, 5, 10)).means
    for k, v in expect.items():
        assert res[k] == pytest.approx(v), k
    ex = new_only_exclusions(cold, [cold.history(int(u), "test") for u in sel[:2]])
    for e, u in zip(ex, sel[:2], strict=True):
        assert set(e) == set(np.flatnonzero(known)) | set(cold.history(int(u), "test").tolist())


def test_benchmark_reports_slices_and_new_only_for_every_model(tiny_bundle, tmp_path, monkeypatch):
    """The tiny bundle's data comes from the same raw files, so its catalogue is the cold data's and it can be
    evaluated on it; every model's record gets the slices, and `new_only` (for the LLM: the constrained search
    with every known item excluded, so it returns new items only)."""
    from generative_rec.bundle import Bundle
    from generative_rec.cli import main as genrec

    monkeypatch.setenv("GENREC_HOME", str(tmp_path / "home"))
    cold = _prepare(write_synthetic(tmp_path / "raw"), tmp_path / "cold", new_items=0.2)
    assert Bundle(tiny_bundle).item_ids == cold.item_ids and cold.cold_start["test_targets_new"] > 0
    out = tmp_path / "bench"
    genrec(["benchmark", "--data", str(cold.path), "--bundle", str(tiny_bundle), "--models", "pop,itemknn,llm",
            "--output", str(out)])
    rep = json.loads((out / "results.json").read_text())
    n_new = int(slice_masks(cold, np.arange(cold.num_users))["new target"].sum())
    for name, r in rep["models"].items():
        assert r["slices"]["new target"]["users"] == n_new, name
        assert r["slices"]["known target"]["users"] == cold.num_users - n_new
        assert r["new_only"]["users"] == n_new and 0 <= r["new_only"]["HR@10"] <= 1
    z = np.load(out / "per_user.npz")
    m = slice_masks(cold, z["users"])["new target"]
    assert rep["models"]["llm"]["slices"]["new target"]["NDCG@10"] == pytest.approx(z["llm/NDCG@10"][m].mean())
    md = (out / "results.md").read_text()
    assert "## By kind of user (NDCG@10)" in md and f"new target ({n_new})" in md


def test_new_item_prior_merges_both_lists_and_is_tuned_on_validation(tiny_bundle, tmp_path):
    """beta = 0 keeps the plain order where new items score low; a large beta puts the model's best new items
    first; each item appears once; beta is the grid value with the best validation NDCG@10 (recomputed)."""
    from generative_rec.bundle import Bundle, load_bundle_model
    from generative_rec.config import EvalSection
    from generative_rec.evaluation.new_item_prior import TwoLists, merge, tune_beta, two_lists

    is_new = np.array([False, False, True, True, False])
    lists = TwoLists(items=np.array([[0, 1, 4, 2]]), scores=np.array([[-1.0, -2.0, -3.0, -9.0]]),
                     new_items=np.array([[2, 3, -1, -1]]), new_scores=np.array([[-9.0, -10.0, -np.inf, -np.inf]]),
                     targets=np.array([3]))
    assert merge(lists, is_new, 0.0, 4).tolist() == [[0, 1, 4, 2]]
    assert merge(lists, is_new, 8.5, 4).tolist() == [[2, 0, 3, 1]]  # -9 + 8.5 = -0.5 > -1 ; -1.5 > -2
    assert merge(lists, is_new, 20.0, 5).tolist() == [[2, 3, 0, 1, 4]]
    beta, curve = tune_beta(lists, is_new, 10, grid=(0.0, 8.5, 20.0))
    assert curve[20.0]["all"] == max(c["all"] for c in curve.values()) and beta == 20.0
    assert curve[0.0]["all"] == pytest.approx(1 / np.log2(6))  # beta 0: the target (new list) comes 5th
    assert curve[0.0]["known target"] == 0.0  # no user has a known target here

    # two users, one known target (0) and one new (3): the rules trade one against the other
    two_users = TwoLists(items=np.array([[0, 1, 4, 2]] * 2), scores=np.array([[-1.0, -2.0, -3.0, -9.0]] * 2),
                         new_items=np.array([[2, 3]] * 2), new_scores=np.array([[-9.0, -10.0]] * 2),
                         targets=np.array([0, 3]))
    grid = (0.0, 8.5, 20.0)  # merged: [0 1 4 2], [2 0 3 1], [2 3 0 1]
    beta, curve = tune_beta(two_users, is_new, 4, metric="NDCG@4", grid=grid)
    assert beta == 8.5 and curve[8.5]["all"] == curve[20.0]["all"]  # a tie on all users: the smaller beta
    assert curve[8.5]["known target"] == pytest.approx(1 / np.log2(3))
    assert curve[8.5]["new target"] == pytest.approx(0.5) and curve[0.0]["new target"] == 0.0
    assert tune_beta(two_users, is_new, 4, metric="NDCG@4", grid=grid, max_known_loss=0.05)[0] == 0.0  # every beta > 0 costs 37 %
    assert tune_beta(two_users, is_new, 4, metric="NDCG@4", grid=grid, max_known_loss=0.4)[0] == 8.5  # 20 would cost 50 %
    assert tune_beta(two_users, is_new, 4, metric="NDCG@4", grid=grid, max_known_loss=0.6)[0] == 20.0
    with pytest.raises(ValueError, match="max_known_loss"):
        tune_beta(two_users, is_new, 4, metric="NDCG@4", grid=grid, max_known_loss=1.0)

    cold = _prepare(write_synthetic(tmp_path / "raw"), tmp_path / "cold", new_items=0.2)
    bundle = Bundle(tiny_bundle)
    cfg = EvalSection(split="test", ks=[1, 5, 10], batch_size=8, mask_history=True, baselines=[])
    users = np.arange(cold.num_users)
    two = two_lists(bundle, load_bundle_model(bundle), cold, "valid", users, 10, cfg, progress=False)
    found = two.new_items[two.new_items >= 0]
    assert len(found) and cold.new_items[found].all()  # the second search returns new items only
    for u in users:
        assert not set(two.items[u][two.items[u] >= 0]) & set(cold.history(int(u), "valid").tolist())
    merged = merge(two, cold.new_items, 5.0, 10)
    for row in merged:
        got = row[row >= 0]
        assert len(set(got.tolist())) == len(got)
