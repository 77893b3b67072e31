"""LoRA training: what changes and what must not, exact resume after a kill, no leakage, the bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import load_tiny, tiny_config

from generative_rec.bundle import Bundle
from generative_rec.data import RecData
from generative_rec.indexing import build_index
from generative_rec.modeling import LoraSettings, add_item_tokens, apply_lora
from generative_rec.prompts import IGNORE, Renderer
from generative_rec.training import (
    TargetOnlyLM,
    TrainingSetup,
    epoch_examples,
    load_base,
    make_batches,
    param_groups,
    select_templates,
    windows,
)


def _setup(tiny_data, tmp_path, scheme="atomic"):
    cfg = load_tiny(tiny_data, tmp_path / "out", index={"scheme": scheme})
    data = RecData(tiny_data)
    index = build_index(data, cfg.index)
    model, tok = load_base(cfg, data, tmp_path / "work")
    new_ids = add_item_tokens(model, tok, index.new_tokens, index.token_items, data.titles)
    r = Renderer(tok, index.token_ids(tok), data.titles, "movie")
    return cfg, data, index, model, tok, new_ids, r


def test_lora_trains_new_item_rows_only(tiny_data, tmp_path):
    cfg, data, index, model, tok, new_ids, r = _setup(tiny_data, tmp_path)
    old_vocab = len(tok) - len(new_ids)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), new_ids)
    setup = TrainingSetup(cfg, data, r, select_templates(cfg), new_ids)
    wrapper = TargetOnlyLM(peft_model)
    opt = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=1e-2)
    for b in make_batches(epoch_examples(setup, 0), 4, tok.pad_token_id, 0)[:5]:
        wrapper(**b)[0].backward()
        opt.step()
        opt.zero_grad()
    merged = peft_model.merge_and_unload()
    emb_after = merged.get_input_embeddings().weight
    assert torch.equal(emb_after[:old_vocab], emb_before[:old_vocab])  # the old vocabulary is untouched
    assert not torch.allclose(emb_after[old_vocab:], emb_before[old_vocab:])  # item rows were trained
    assert merged.get_output_embeddings().weight.data_ptr() == emb_after.data_ptr()  # still tied


def test_token_lr_gives_the_item_rows_their_own_group(tiny_data, tmp_path):
    cfg, data, index, model, tok, new_ids, r = _setup(tiny_data, tmp_path)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), new_ids)
    trainable = {id(p) for p in peft_model.parameters() if p.requires_grad}
    cfg.train.token_lr = None
    (only,) = param_groups(peft_model, cfg.train)
    assert {id(p) for p in only["params"]} == trainable and "lr" not in only
    cfg.train.token_lr = 0.05
    rest, tokens = param_groups(peft_model, cfg.train)
    assert tokens["lr"] == 0.05 and "lr" not in rest
    assert {id(p) for p in rest["params"]} | {id(p) for p in tokens["params"]} == trainable
    # the item rows: one [new tokens, hidden] delta (tied head, so the input embedding only)
    assert [tuple(p.shape) for p in tokens["params"]] == [(len(new_ids), model.config.hidden_size)]
    opt = torch.optim.AdamW(param_groups(peft_model, cfg.train), lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.05]


def test_frozen_base_weights_unchanged(tiny_data, tmp_path):
    cfg, data, index, model, tok, new_ids, r = _setup(tiny_data, tmp_path)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), new_ids)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    setup = TrainingSetup(cfg, data, r, select_templates(cfg), new_ids)
    wrapper = TargetOnlyLM(peft_model)
    opt = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=1e-2)
    for b in make_batches(epoch_examples(setup, 0), 4, tok.pad_token_id, 0)[:4]:
        wrapper(**b)[0].backward()
        opt.step()
        opt.zero_grad()
    now = dict(peft_model.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in frozen.items()), "a frozen base weight changed"
    changed = [n for n, v in trainable.items() if not torch.equal(now[n], v)]
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert any("trainable_tokens" in n for n in changed)


def test_target_only_loss_matches_full_logits(tiny_data, tmp_path):
    cfg, data, index, model, tok, new_ids, r = _setup(tiny_data, tmp_path)
    setup = TrainingSetup(cfg, data, r, select_templates(cfg), new_ids)
    b = make_batches(epoch_examples(setup, 0), 4, tok.pad_token_id, 0)[0]
    loss, n = TargetOnlyLM(model)(**b)
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                            b["labels"][:, 1:].reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(loss, ref, atol=1e-5) and n == (b["labels"][:, 1:] != IGNORE).sum()


def test_windows():
    seq = np.arange(10)
    assert [w.tolist() for w in windows(seq, 4, "last", 1)] == [[6, 7, 8, 9]]
    ws = windows(seq, 4, "all", 1)
    targets = [x for w in ws for x in w[1:].tolist()]
    assert sorted(targets) == list(range(1, 10))  # every item after the first is a target exactly once
    assert [w.tolist() for w in windows(np.arange(3), 5, "all", 1)] == [[0, 1, 2]]


@pytest.mark.parametrize("scheme", ["atomic", "sequential"])
def test_no_validation_or_test_item_in_training_examples(tiny_data, tmp_path, scheme):
    """Training examples for next-item prediction never contain a user's validation or test item, and
    an item that occurs only as some user's test target appears in no next-item example at all."""
    cfg, data, index, model, tok, new_ids, r = _setup(tiny_data, tmp_path, scheme)
    cfg.prompts.tasks = {"next_item": 3.0}
    cfg.prompts.windows = "all"
    setup = TrainingSetup(cfg, data, r, select_templates(cfg), new_ids)
    examples = [ids for ids, _ in epoch_examples(setup, 0)]
    train_items = {int(i) for s in data.train_sequences() for i in s}
    held_out = {int(s[-1]) for s in data.sequences} | {int(s[-2]) for s in data.sequences}
    only_held_out = held_out - train_items

    def contains(ids, sub):
        n = len(sub)
        return any(ids[j: j + n] == sub for j in range(len(ids) - n + 1))

    for i in only_held_out:
        assert not any(contains(e, r.id_tokens[i]) for e in examples), f"held-out-only item {i} leaked"
    # per user, with one token per item: a user's next-item examples hold only that user's training items
    if scheme == "atomic":
        item_token = {r.id_tokens[i][0]: i for i in range(data.num_items)}
        for u in range(data.num_users):
            allowed = set(data.train_sequence(u).tolist())
            for w in windows(data.train_sequence(u), cfg.prompts.max_history + 1, "all", 1):
                for t in setup.templates["next_item"]:
                    if t.sequence_capable:
                        ids, _ = r.sequence_example(t, w, 1)
                        seen = {item_token[x] for x in ids if x in item_token}
                        assert seen <= allowed and int(data.sequences[u][-1]) not in seen
                        assert int(data.sequences[u][-2]) not in seen or int(data.sequences[u][-2]) in allowed


def test_bundle_contents(tiny_bundle):
    b = Bundle(tiny_bundle)
    for f in ("bundle.json", "model/config.json", "model/model.safetensors", "adapter/adapter_config.json",
              "index.json", "trie.npz", "catalogue.jsonl", "templates.json", "config.yaml", "metrics.json"):
        assert (tiny_bundle / f).exists(), f
    assert not (tiny_bundle / "checkpoints").exists()
    b.check_tokenizer()
    m = b.metrics
    assert m["train"]["steps"] == 6 and set(m["valid"]) >= {"HR@10", "NDCG@10", "MRR@10", "Coverage@10"}
    assert b.inference_key in b.templates and any(t.heldout for t in b.templates.values())
    cfg = yaml.safe_load((tiny_bundle / "config.yaml").read_text())
    assert cfg["index"]["scheme"] == "atomic"


def _run_train(cfg_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "generative_rec", "train", "--config", str(cfg_path), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def test_kill_after_checkpoint_then_resume_reaches_the_same_loss(tiny_data, tmp_path):
    steps = 40
    sections = {"train": {"max_steps": steps, "batch_size": 2, "save_every": 5, "log_every": 1, "lr": 0.01,
                          "eval_users": 4, "keep_checkpoints": 2},
                "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}  # dropout: the RNG state must resume too
    ref_cfg = tmp_path / "ref.yaml"
    ref_cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "ref", **sections)))
    p = _run_train(ref_cfg)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    ref_log = json.loads((tmp_path / "ref" / "metrics.json").read_text())["train"]["log"]

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "run", **sections)))
    p = _run_train(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpts.glob("step-*/state.json")):
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert not (tmp_path / "run" / "bundle.json").exists(), "the run finished before it could be killed"
    killed_at = json.loads(sorted(ckpts.glob("step-*/state.json"))[-1].read_text())["step"]
    assert 0 < killed_at < steps

    p = _run_train(cfg, "--resume")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    assert "resumed from" in out
    log = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["log"]
    ref = {r["step"]: r["loss"] for r in ref_log if "loss" in r}
    got = {r["step"]: r["loss"] for r in log if "loss" in r}
    assert max(got) == steps
    for s in range(killed_at + 1, steps + 1):
        assert got[s] == pytest.approx(ref[s], abs=1e-6), f"step {s}"


def test_existing_bundle_is_not_overwritten_silently(tiny_bundle):
    from generative_rec.config import RunConfig, from_dict
    from generative_rec.training import train

    cfg = yaml.safe_load((tiny_bundle / "config.yaml").read_text())
    with pytest.raises(FileExistsError):
        train(from_dict(RunConfig, cfg))
