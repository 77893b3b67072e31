"""Item rows tied to their text with free-row dropout (generative_rec/text_rows.py, ``model.text_rows``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cold_items import _train, cold_data  # noqa: F401  (the module-scoped cold-start data fixture)

from generative_rec.text_rows import TextRows, text_vectors


def _rows(dropout=0.5):
    torch.manual_seed(0)
    vectors = text_vectors(np.random.default_rng(0).normal(size=(4, 3)))
    tr = TextRows([10, 11, 12, 13], vectors, np.array([True, True, True, False]), vocab_size=16, hidden=2,
                  dropout=dropout)
    with torch.no_grad():
        tr.w.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3) / 10)
    return tr, vectors


def test_text_vectors_are_centred_with_unit_mean_norm():
    v = text_vectors(np.random.default_rng(1).normal(5.0, 2.0, size=(50, 8)))
    assert torch.allclose(v.mean(0), torch.zeros(8), atol=1e-5)
    assert abs(v.norm(dim=-1).mean().item() - 1.0) < 1e-5


def test_rows_add_the_text_part_and_dropout_replaces_only_trained_free_rows():
    tr, vectors = _rows()
    ids = torch.tensor([10, 11, 12, 13, 3])  # token 3 is not an item: untouched
    free = torch.randn(5, 2)
    text = vectors @ tr.w.detach().T
    expect = free.clone()
    expect[:4] += text
    torch.testing.assert_close(tr.rows(free, ids, training=False), expect)
    mean = free[:3].mean(0)  # the trained items' mean free row
    seen_drop = set()
    for _ in range(50):
        out = tr.rows(free, ids, training=True)
        for j in range(5):
            if torch.allclose(out[j], expect[j]):
                continue
            assert j in (0, 1, 2), "only trained items lose their free row"
            torch.testing.assert_close(out[j], mean + text[j])
            seen_drop.add(j)
    assert seen_drop == {0, 1, 2}
    assert tr.untrained_tokens(ids).tolist() == [False, False, False, True, False]
    with pytest.raises(ValueError, match="dropout"):
        TextRows([1], vectors[:1], np.array([True]), 4, 2, dropout=0.0)


def test_fold_writes_full_rows_for_trained_items_and_mean_plus_text_for_untrained():
    tr, vectors = _rows()
    head = torch.nn.Linear(2, 16, bias=False)
    model = torch.nn.Module()
    model.lm_head = head
    model.get_output_embeddings = lambda: head
    before = head.weight.detach().clone()
    text = vectors @ tr.w.detach().T
    tr.attach(model)
    h = torch.randn(3, 2)
    torch.testing.assert_close(head(h)[:, [10, 11, 12, 13]], h @ (before[10:14] + text).T)  # the hook adds P t
    info = tr.fold(model)
    w = head.weight.detach()
    torch.testing.assert_close(w[10:13], before[10:13] + text[:3])
    torch.testing.assert_close(w[13], before[10:13].mean(0) + text[3])
    torch.testing.assert_close(w[:10], before[:10])
    torch.testing.assert_close(head(h), h @ w.T)  # the hook is gone: rows live in the weight now
    assert info["untrained_items"] == 1 and tr.w.abs().sum() == 0


def test_training_with_text_rows_serves_untrained_items_from_their_text(cold_data, tmp_path):  # noqa: F811
    from generative_rec.bundle import Bundle

    untrained = np.flatnonzero(cold_data.train_counts == 0)
    trained = np.flatnonzero(cold_data.train_counts > 0)
    on, info = _train(cold_data, tmp_path / "on", text_rows=0.2)
    off, _ = _train(cold_data, tmp_path / "off", cold_rows=False)
    assert info["cold_rows"] is None  # text rows replace the ridge map
    t = info["text_rows"]
    assert t["items"] == cold_data.num_items and t["untrained_items"] == len(untrained) and t["dropout"] == 0.2
    assert t["text_norm"] > 0  # the projection moved off zero
    bundle = Bundle(tmp_path / "on")
    tokens = np.asarray([seq[0] for seq in bundle.index.token_ids(bundle.tokenizer)])
    # untrained items now sit among the trained ones (m + P t), not where the popularity start put them (last)
    gap_on = (on[tokens[untrained]] - on[tokens[trained]].mean(0)).norm(dim=-1).mean()
    gap_off = (off[tokens[untrained]] - off[tokens[trained]].mean(0)).norm(dim=-1).mean()
    assert gap_on < gap_off
    # ... and differ from each other only by their text parts
    spread = on[tokens[untrained]] - on[tokens[untrained]].mean(0)
    assert spread.norm(dim=-1).min() > 0


def test_text_rows_need_one_new_token_per_item(cold_data, tmp_path):  # noqa: F811
    from helpers import tiny_config

    from generative_rec.config import RunConfig, from_dict
    from generative_rec.errors import ConfigError
    from generative_rec.training import train

    cfg = tiny_config(cold_data.path, tmp_path / "seq", model={"popularity_start": True, "text_rows": 0.2},
                      index={"scheme": "sequential"}, prompts={"tasks": {"next_item": 1.0}},
                      train={"max_steps": 1, "eval_users": 4})
    with pytest.raises(ConfigError, match="one new token"):
        train(from_dict(RunConfig, cfg))
