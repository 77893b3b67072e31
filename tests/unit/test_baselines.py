"""Baselines on a tiny prepared data set: full-catalogue scores, history masking, no peeking at held-out
items during training, determinism, tuning; and the ranking helpers they are evaluated with."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from generative_rec.data import PrepareConfig, RecData, prepare
from generative_rec.errors import ConfigError
from generative_rec.evaluation.baselines import BASELINE_OPTIONS, BASELINES, baseline_options, make, tune
from generative_rec.evaluation.baselines.base import runtime_inputs
from generative_rec.evaluation.baselines.common import NegativeSampler, early_stopping, train_pairs
from generative_rec.evaluation.baselines.mf_llm_init import pca_init
from generative_rec.evaluation.baselines.sasrec import windows
from generative_rec.evaluation.ranking import evaluate_model, rank_full, topk_indices
from generative_rec.options import values

N_REGULAR = 12          # items 0..11 appear in training sequences
TEST_ONLY = (12, 13)    # appear only as test targets
VALID_ONLY = 14         # appears only as a validation target
N_ITEMS = 15
N_USERS = 40
GENRES = ["Action", "Comedy", "Drama"]


def user_sequence(u: int) -> list[int]:
    """A walk over the regular items (item t+1 follows item t), then the validation and test targets."""
    start, length = u % N_REGULAR, 5 + u % 4
    seq = [(start + t) % N_REGULAR for t in range(length)]
    nxt = [(start + length) % N_REGULAR, (start + length + 1) % N_REGULAR]
    if u % 10 == 0:
        nxt[1] = TEST_ONLY[0]
    if u % 10 == 5:
        nxt[1] = TEST_ONLY[1]
    if u % 10 == 7:
        nxt[0] = VALID_ONLY
    return seq + nxt


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> RecData:
    root = tmp_path_factory.mktemp("tiny")
    with open(root / "inter.jsonl", "w") as f:
        for u in range(N_USERS):
            for t, i in enumerate(user_sequence(u)):
                f.write(json.dumps({"user_id": f"u{u}", "item_id": f"i{i}", "timestamp": 1000 * u + t}) + "\n")
    with open(root / "items.csv", "w") as f:
        f.write("item_id,title,genres\n")
        for i in range(N_ITEMS):
            f.write(f"i{i},Item {i},{GENRES[i % 3]} {GENRES[(i + 1) % 3] if i % 2 else ''}\n")
    out = prepare(PrepareConfig(source="table", output=str(root / "prepared"), attribute_field="genres",
                                table={"path": str(root / "inter.jsonl"), "items_path": str(root / "items.csv"),
                                       "item_fields": ["genres"]}))
    d = RecData(out)
    assert d.num_items == N_ITEMS and d.item_ids[12] == "i12"
    return d


def with_targets(data: RecData, valid: dict[int, int] | None = None, test: dict[int, int] | None = None) -> RecData:
    """A copy of ``data`` whose validation / test targets are replaced for some users (train parts equal)."""
    d = copy.copy(data)
    d.__dict__.pop("train_counts", None)
    d.sequences = [s.copy() for s in data.sequences]
    for u, i in (valid or {}).items():
        d.sequences[u][-2] = i
    for u, i in (test or {}).items():
        d.sequences[u][-1] = i
    return d


def item_embeddings(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N_ITEMS, 16)).astype(np.float32)


FAST = {
    "pop": {},
    "itemknn": {"k": 5, "shrink": 1.0},
    "bpr": {"dim": 8, "epochs": 4, "eval_every": 2, "patience": 1, "batch_size": 64, "lr": 1e-2},
    "sasrec": {"dim": 16, "max_len": 8, "epochs": 4, "eval_every": 2, "patience": 1, "batch_size": 16},
    "lightgcn": {"dim": 8, "layers": 2, "epochs": 4, "eval_every": 2, "patience": 1, "batch_size": 64},
    "content_knn": {"item_embeddings": item_embeddings()},
    "mf_llm_init": {"item_embeddings": item_embeddings(), "dim": 8, "epochs": 4, "eval_every": 2,
                    "patience": 1, "batch_size": 64, "lr": 1e-2},
}


def constant(score_fn) -> float:
    """A validator that ignores the validation targets (training length fixed by patience)."""
    return 0.0


def test_registry_lists_every_baseline():
    assert set(BASELINES) == set(FAST)
    for name, cls in BASELINES.items():
        assert cls.name == name
        assert isinstance(cls.grid, dict)
        m = make(name, **FAST[name])
        assert callable(m.fit) and callable(m.score)
    with pytest.raises(KeyError, match="unknown baseline"):
        make("nope")


@pytest.mark.parametrize("name", sorted(FAST))
def test_ranks_full_catalogue_with_history_masked(data, name):
    model = make(name, **FAST[name]).fit(data, seed=0)
    assert model.fit_info["seed"] == 0 and "fit_s" in model.fit_info
    users = np.arange(data.num_users)
    hist = [data.history(u, "test") for u in users]
    scores = model.score(users, hist)
    assert scores.shape == (data.num_users, N_ITEMS) and np.isfinite(scores).all()

    r = rank_full(model.score, data, "test", users, k=N_ITEMS, batch_size=7)
    for row, h in zip(r.topk, hist, strict=True):
        ranked = row[row >= 0]
        assert set(ranked) == set(range(N_ITEMS)) - set(h)  # every non-history item, exactly once
        assert len(ranked) == len(set(ranked))
        assert (row[len(ranked):] == -1).all()               # masked history only as padding at the end
    assert r.targets.tolist() == [int(s[-1]) for s in data.sequences]

    ev = evaluate_model(model.score, data, "test", ks=(1, 5, 10))
    assert ev.per_user["NDCG@10"].shape == (N_USERS,)
    # the means are the per-user means of ranks read off the full ranking above
    ranks = np.array([list(row).index(t) + 1 if t in row else 0 for row, t in zip(r.topk, r.targets, strict=True)])
    hit10 = (ranks > 0) & (ranks <= 10)
    assert ev.means["HR@10"] == pytest.approx(hit10.mean())
    assert ev.means["NDCG@10"] == pytest.approx(np.where(hit10, 1 / np.log2(ranks + 1), 0).mean())
    assert {"Coverage@10", "Novelty@10", "PopBias@10", "ILD@10"} <= set(ev.means)


@pytest.mark.parametrize("name", sorted(FAST))
def test_training_never_sees_test_targets(data, name):
    """Changing only the test targets cannot change a fitted model (default validator: valid split)."""
    other = with_targets(data, test={u: (int(data.sequences[u][-1]) + 3) % N_ITEMS for u in range(0, N_USERS, 2)})
    users = np.arange(N_USERS)
    train_hist = [data.train_sequence(u) for u in users]
    a = make(name, **FAST[name]).fit(data, seed=1).score(users, train_hist)
    b = make(name, **FAST[name]).fit(other, seed=1).score(users, train_hist)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(FAST))
def test_training_never_sees_validation_or_test_targets(data, name):
    """With a validator that ignores the targets, changing valid AND test targets changes nothing."""
    other = with_targets(data, valid={u: VALID_ONLY for u in range(1, N_USERS, 3)},
                         test={u: TEST_ONLY[u % 2] for u in range(N_USERS)})
    users = np.arange(N_USERS)
    train_hist = [data.train_sequence(u) for u in users]
    a = make(name, **FAST[name]).fit(data, constant, seed=2).score(users, train_hist)
    b = make(name, **FAST[name]).fit(other, constant, seed=2).score(users, train_hist)
    np.testing.assert_array_equal(a, b)


def test_held_out_items_absent_from_training_inputs(data):
    held_out = [*TEST_ONLY, VALID_ONLY]
    assert (data.train_counts[held_out] == 0).all()
    _, items = train_pairs(data)
    assert not np.isin(items, held_out).any()
    x, y = windows(data.train_sequences(), 8)
    assert not np.isin(np.concatenate([x.ravel(), y.ravel()]), np.array(held_out) + 1).any()
    pop = make("pop").fit(data)
    assert (pop.score(np.arange(2), [np.array([0]), np.array([1])])[:, held_out] == 0).all()
    knn = make("itemknn", k=5).fit(data)
    assert knn.sim[held_out].nnz == 0 and knn.sim[:, held_out].nnz == 0


def test_same_seed_same_model(data):
    users = np.arange(N_USERS)
    hist = [data.history(u, "valid") for u in users]
    for name in ("bpr", "sasrec", "lightgcn"):
        a = make(name, **FAST[name]).fit(data, seed=3).score(users, hist)
        b = make(name, **FAST[name]).fit(data, seed=3).score(users, hist)
        np.testing.assert_array_equal(a, b)


def test_content_knn_scores_cold_start_items(data):
    emb = np.eye(N_ITEMS, dtype=np.float32)
    emb[TEST_ONLY[0]] = emb[3] + 0.1 * emb[4]  # a cold item that looks like item 3
    model = make("content_knn", item_embeddings=emb, center=False).fit(data)
    top = topk_indices(model.score(np.array([0]), [np.array([3])]), 2)[0]
    assert top.tolist() == [3, TEST_ONLY[0]]
    with pytest.raises(ValueError, match="item_embeddings"):
        make("content_knn", item_embeddings=emb[:3]).fit(data)


def test_itemknn_learns_the_walk(data):
    # in the tiny data item t+1 always follows item t: a neighbour of the last item must rank first
    knn = make("itemknn", k=3, shrink=0.0, decay=0.5).fit(data)
    scores = knn.score(np.array([0]), [np.array([4, 5, 6])])
    scores[:, [4, 5, 6]] = -np.inf
    assert topk_indices(scores, 1)[0, 0] in (3, 7)


def test_tune_picks_best_on_validation(data):
    res = tune("itemknn", data, grid={"k": [1, 5], "shrink": [0.0]}, seed=4)
    assert len(res.trials) == 2 and res.seed == 4
    best = max(res.trials, key=lambda t: t["valid"])
    assert res.params == best["params"] and res.valid_score == best["valid"]
    assert res.model.k == res.params["k"]


# ------------------------------------------------------------------------------------------------ options
REPO = Path(__file__).parents[2]
_BPR = {"dim": 128, "lr": 2e-3, "reg": 1e-4, "batch_size": 1024, "epochs": 200, "eval_every": 5, "patience": 5,
        "init_std": 0.1}
# The dataclass defaults every baseline had before its options class (behaviour must not change).
PREVIOUS_DEFAULTS = {
    "pop": {},
    "itemknn": {"k": 50, "shrink": 10.0, "decay": 0.5, "block": 1024},
    "bpr": _BPR,
    "mf_llm_init": _BPR,
    "sasrec": {"dim": 64, "heads": 1, "blocks": 2, "max_len": 50, "dropout": 0.2, "lr": 3e-3, "weight_decay": 0.0,
               "batch_size": 128, "epochs": 200, "eval_every": 3, "patience": 4},
    "lightgcn": {"dim": 64, "layers": 2, "lr": 1e-2, "reg": 1e-4, "batch_size": 4096, "epochs": 300,
                 "eval_every": 5, "patience": 4},
    "content_knn": {"decay": 0.9, "last_n": None, "center": True},
}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_options_keep_the_previous_defaults(name):
    assert values(baseline_options(name, {})) == PREVIOUS_DEFAULTS[name]
    model = make(name)
    assert {k: getattr(model, k) for k in PREVIOUS_DEFAULTS[name]} == PREVIOUS_DEFAULTS[name]
    assert isinstance(model, BASELINE_OPTIONS[name]) or not PREVIOUS_DEFAULTS[name]
    expected_inputs = ["item_embeddings"] if name in ("content_knn", "mf_llm_init") else []
    assert runtime_inputs(name) == expected_inputs


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_unknown_or_mistyped_hyper_parameter_is_an_error(name):
    with pytest.raises(ConfigError, match="'no_such_param'"):
        make(name, **FAST[name], no_such_param=1)
    for f in fields(BASELINE_OPTIONS[name]):  # no baseline option takes a string
        with pytest.raises(ConfigError, match=f"baseline {name}.{f.name}: 'x' (is not|does not fit)"):
            make(name, **{f.name: "x"})
    grid = {**BASELINES[name].grid, "dimm": [1]}
    with pytest.raises(ConfigError, match="dimm"):
        tune(name, None, grid=grid)  # checked before any fit


def test_hyper_parameters_are_converted():
    assert make("itemknn", shrink=0).shrink == 0.0 and isinstance(make("itemknn", shrink=0).shrink, float)
    assert make("content_knn", last_n=None).last_n is None and make("content_knn", last_n=3).last_n == 3
    with pytest.raises(ConfigError, match="dim: 64.0 is not a valid int"):
        make("bpr", dim=64.0)
    with pytest.raises(ConfigError, match="takes no hyper-parameters"):
        make("pop", k=3)
    emb = item_embeddings()
    assert make("mf_llm_init", item_embeddings=emb, dim=8).item_embeddings is emb  # run-time input: as given
    with pytest.raises(ConfigError, match=r"run-time inputs: \['item_embeddings'\]"):
        make("content_knn", item_embedding=emb)


def _bench_quick_grids() -> dict:
    spec = importlib.util.spec_from_file_location("_bench_baselines_ml100k", REPO / "bench" / "baselines_ml100k.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.QUICK


def test_every_grid_and_fixed_key_is_an_option():
    """The benchmark tiers, every model's own grid and bench/baselines_ml100k.py --quick name real options
    of the right type (every grid point with the fixed settings passes the options class)."""
    from generative_rec import benchmark
    from generative_rec.evaluation.baselines.tuning import grid_points

    sources = [(f"{name}.grid", name, cls.grid, {}) for name, cls in BASELINES.items()]
    for tier in benchmark.TIERS.values():
        for name in set(tier.grids) | set(tier.fixed):
            assert name in BASELINES, (tier.name, name)
            sources.append((f"tier {tier.name}", name, tier.grids.get(name, BASELINES[name].grid),
                            tier.fixed.get(name, {})))
    sources += [(f"bench QUICK {name}", name, grid, {}) for name, grid in _bench_quick_grids().items()]
    for where, name, grid, fixed in sources:
        known = {f.name for f in fields(BASELINE_OPTIONS[name])}
        assert set(grid) | set(fixed) <= known, (where, sorted(set(grid) | set(fixed) - known))
        for point in grid_points(grid):
            baseline_options(name, {**fixed, **point})


def test_worked_example_of_a_new_baseline_runs(data, tmp_path):
    """The worked example of docs/options.md (a new baseline module) works as the doc says."""
    text = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# generative_rec/evaluation/baselines/recent_pop.py\n.*?)```", text, re.S).group(1)
    path = tmp_path / "recent_pop_example.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("recent_pop_example", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        assert BASELINE_OPTIONS["recent_pop"] is mod.RecentPopOptions
        with pytest.raises(ConfigError, match=re.escape("baseline recent_pop: unknown key(s) ['windw']; "
                                                        "known: ['window']")):
            make("recent_pop", windw=3)
        model = make("recent_pop", window=2).fit(data)
        users = np.arange(N_USERS)
        scores = model.score(users, [data.history(u, "test") for u in users])
        assert scores.shape == (N_USERS, N_ITEMS) and (scores[:, [*TEST_ONLY, VALID_ONLY]] == 0).all()
        assert tune("recent_pop", data).params["window"] in (1, 5, 20)
    finally:
        BASELINES.pop("recent_pop", None)
        BASELINE_OPTIONS.pop("recent_pop", None)
        sys.modules.pop(spec.name, None)


def test_pca_init_shape_and_scale():
    e = np.random.default_rng(0).normal(size=(30, 5))
    init = pca_init(e, 8, 0.1)  # more factors than the rank: the extra columns are zero
    assert init.shape == (30, 8) and np.allclose(init[:, 5:], 0)
    assert init.std() == pytest.approx(0.1, rel=1e-5)
    assert np.allclose(init.mean(axis=0), 0, atol=1e-6)


def test_negative_sampler_avoids_positives():
    users = np.array([0, 0, 0, 1])
    items = np.array([0, 1, 2, 3])
    s = NegativeSampler(users, items, 5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        neg = s(np.array([0, 0, 1, 1]), rng)
        assert all(n not in {0, 1, 2} for n in neg[:2]) and all(n != 3 for n in neg[2:])


def test_early_stopping_restores_best_weights():
    module = torch.nn.Linear(1, 1, bias=False)
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.9])

    def run_epoch(epoch: int) -> float:
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        return 0.0

    rec = early_stopping(module, run_epoch, lambda: None, lambda f: next(scores), max_epochs=10, eval_every=1,
                         patience=2, name="t")
    assert rec["best_epoch"] == 2 and rec["epochs_run"] == 4 and rec["valid_best"] == 0.3
    assert module.weight.item() == 2.0


def test_windows_by_hand():
    # items 0..4 -> shifted 1..5; max_len 2: windows from the end: (3,4)->(4,5), then (1,2)->(2,3)
    x, y = windows([np.arange(5)], 2)
    assert x.tolist() == [[3, 4], [1, 2]] and y.tolist() == [[4, 5], [2, 3]]
    # a short sequence is left-padded
    x, y = windows([np.array([7, 8])], 3)
    assert x.tolist() == [[0, 0, 8]] and y.tolist() == [[0, 0, 9]]


def test_topk_ties_by_index_and_masked_padding():
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert topk_indices(scores, 5).tolist() == [[1, 2, 4, 0, -1], [0, 1, 2, 3, 4]]
    assert topk_indices(scores, 2).tolist() == [[1, 2], [0, 1]]
    with pytest.raises(ValueError, match="NaN"):
        topk_indices(np.array([[np.nan, 1.0]]), 1)


def test_rank_full_masks_history_and_checks_shape(data):
    def uniform(users, histories):
        return np.zeros((len(users), data.num_items))

    r = rank_full(uniform, data, "valid", np.array([0, 1]), k=N_ITEMS)
    for row, u in zip(r.topk, [0, 1], strict=True):
        hist = set(data.train_sequence(u).tolist())
        assert not hist & set(row.tolist())
        assert row[: N_ITEMS - len(hist)].tolist() == sorted(set(range(N_ITEMS)) - hist)  # ties by index
    unmasked = rank_full(uniform, data, "valid", np.array([0]), k=3, mask_history=False)
    assert unmasked.topk.tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="shape"):
        rank_full(lambda u, h: np.zeros((len(u), 3)), data, "valid", np.array([0]), k=3)
