"""Rows for items that training never saw (generative_rec/cold_items.py): the ridge map from text to trained
LM-head rows, and training writing its prediction into the adapter and the merged bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_config, write_synthetic

from generative_rec.cold_items import fit_ridge, single_token_items


def test_ridge_recovers_a_linear_map_and_falls_back_to_the_mean_on_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12))
    w_true = rng.normal(size=(12, 5))
    y = x @ w_true + 3.0 + 0.05 * rng.normal(size=(400, 5))
    w, xm, ym, info = fit_ridge(x, y, seed=1)
    assert info["held_out_r2"] > 0.99 and info["held_out"] == 40 and info["rows"] == 400
    np.testing.assert_allclose(w, w_true, atol=0.02)
    new = rng.normal(size=(7, 12))
    np.testing.assert_allclose((new - xm) @ w + ym, new @ w_true + 3.0, atol=0.1)
    noise = rng.normal(size=(400, 5))  # no relation: the strongest penalty wins, predictions near the mean
    w, xm, ym, info = fit_ridge(x, noise, seed=1)
    assert info["penalty"] >= 1.0 and info["held_out_r2"] < 0.05
    assert np.abs((new - xm) @ w).max() < 0.5
    with pytest.raises(ValueError, match="same number of rows"):
        fit_ridge(x, y[:-1])


def test_single_token_items_only_for_one_token_of_its_own_per_item():
    assert single_token_items([[10], [11], [12]], [10, 11, 12, 13]).tolist() == [10, 11, 12]
    assert single_token_items([[10, 11], [10, 12]], [10, 11, 12]) is None  # multi-token IDs share tokens
    assert single_token_items([[10], [10]], [10]) is None  # two items on one token
    assert single_token_items([[10], [5]], [10]) is None  # a token the scheme did not add


@pytest.fixture(scope="module")
def cold_data(tmp_path_factory):
    from generative_rec.data import PrepareConfig, RecData, prepare

    inter, items = write_synthetic(tmp_path_factory.mktemp("raw"), n_users=40, n_items=30)
    path = prepare(PrepareConfig(
        source="table", output=str(tmp_path_factory.mktemp("cold") / "d"), attribute_field="genres",
        new_items=0.2, new_items_seed=1,
        table={"path": str(inter), "user": "user", "item": "item", "timestamp": "ts", "items_path": str(items),
               "item_id": "item_id", "title": "title", "item_fields": ["genres"]}))
    return RecData(path)


def _train(data, out, **model):
    import json

    from generative_rec.config import RunConfig, from_dict
    from generative_rec.training import train

    cfg = tiny_config(data.path, out, model={"popularity_start": True, **model},
                      prompts={"tasks": {"next_item": 1.0}}, train={"max_steps": 3, "eval_users": 4})
    train(from_dict(RunConfig, cfg))
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "model").get_output_embeddings().weight.detach()
    return merged, json.loads((out / "metrics.json").read_text())["train"]


def test_training_writes_text_predicted_rows_for_untrained_items_only(cold_data, tmp_path):
    from generative_rec.bundle import Bundle

    untrained = np.flatnonzero(cold_data.train_counts == 0)
    assert len(untrained) >= 6  # the drawn new items (20 %), at least
    on, info = _train(cold_data, tmp_path / "on")
    off, info_off = _train(cold_data, tmp_path / "off", cold_rows=False)
    assert info_off["cold_rows"] is None
    c = info["cold_rows"]
    assert c["items"] == len(untrained) and c["fitted_on"] == cold_data.num_items - len(untrained)
    assert set(c) >= {"penalty", "held_out_r2", "row_norm"}
    bundle = Bundle(tmp_path / "on")
    tokens = np.asarray([seq[0] for seq in bundle.index.token_ids(bundle.tokenizer)])
    trained = np.flatnonzero(cold_data.train_counts > 0)
    # the same seeded run: trained items' rows are identical, untrained items' rows are replaced
    torch.testing.assert_close(on[tokens[trained]], off[tokens[trained]])
    assert not torch.allclose(on[tokens[untrained]], off[tokens[untrained]])
    # ... by the ridge prediction: rows in the span of the trained rows' mean plus text directions, not the
    # popularity start's (which put them last): they now score like an average trained item
    assert (on[tokens[untrained]] - off[tokens[untrained]]).norm(dim=-1).min() > 1e-4
    mean_trained = on[tokens[trained]].mean(0)
    assert (on[tokens[untrained]] - mean_trained).norm(dim=-1).mean() < (
        off[tokens[untrained]] - mean_trained).norm(dim=-1).mean()
    # the saved adapter carries the same rows as the merged model
    from safetensors.torch import load_file

    state = load_file(tmp_path / "on" / "adapter" / "adapter_model.safetensors")
    key = next(k for k in state if "lm_head" in k and "trainable_tokens_delta" in k)
    rows = state[key]
    from peft import PeftConfig

    indices = PeftConfig.from_pretrained(tmp_path / "on" / "adapter").trainable_token_indices["lm_head"]
    pos = {int(t): p for p, t in enumerate(indices)}
    torch.testing.assert_close(rows[[pos[int(t)] for t in tokens[untrained]]], on[tokens[untrained]])
