"""Block-aligned prompts (``prompts.align``): item IDs start on a block boundary; training sees 0..align-1 fillers."""

from __future__ import annotations

import json
import random

import pytest
from helpers import load_tiny, sequential_setup

from generative_rec.bundle import Bundle
from generative_rec.errors import ConfigError
from generative_rec.prompts import IGNORE, KV_BLOCK, Renderer, filler_token, load_templates, resolve_align
from generative_rec.tasks import build_task
from generative_rec.tasks.base import TaskContext

ALIGN = 32


@pytest.fixture(scope="module")
def setup(tiny_data, tmp_path_factory):
    data, tok, index = sequential_setup(tiny_data, tmp_path_factory.mktemp("tok"))
    plain = Renderer(tok, index.token_ids(tok), data.titles, "movie")
    aligned = Renderer(tok, index.token_ids(tok), data.titles, "movie", align=ALIGN)
    return data, tok, plain, aligned


def next_item_templates():
    return load_templates()["next_item"]


@pytest.mark.parametrize("n_hist", [0, 1, 3, 7, 20])
def test_aligned_prompt_is_the_plain_one_after_fillers_and_a_multiple_of_align(setup, n_hist):
    data, tok, plain, aligned = setup
    hist = [int(i) for i in data.sequences[5][:n_hist]] if n_hist <= len(data.sequences[5]) else list(range(n_hist))
    for t in next_item_templates():
        p, a = plain.prompt_ids(t, hist), aligned.prompt_ids(t, hist)
        assert len(a) % ALIGN == 0, t.key
        f = len(a) - len(p)
        assert 0 <= f < ALIGN and f == aligned.align_fill(len(p)), t.key  # the fewest fillers that align
        k = len(plain.bos)
        assert a == p[:k] + [aligned.filler] * f + p[k:], t.key  # fillers right after the BOS, nothing else moves
        assert a == aligned.prompt_ids(t, hist)  # deterministic per prompt


def test_filler_is_endoftext_else_eos(setup):
    data, tok, plain, aligned = setup
    assert plain.align == 0 and plain.filler is None
    want = tok.get_vocab().get("<|endoftext|>", tok.eos_token_id)
    assert aligned.filler == filler_token(tok) == want is not None

    class WithEndOfText:
        eos_token_id = 2

        def get_vocab(self):
            return {"<|endoftext|>": 0, "<|im_end|>": 2}

    assert filler_token(WithEndOfText()) == 0
    with pytest.raises(ConfigError, match="align"):
        Renderer(tok, plain.id_tokens, data.titles, "movie", align=-32)


def test_sequence_example_labels_are_unchanged_but_for_leading_ignored_fillers(setup):
    data, tok, plain, aligned = setup
    t = next(x for x in next_item_templates() if x.sequence_capable)
    seq = data.sequences[3][:8]
    ids0, lab0 = plain.sequence_example(t, seq, 1)
    k = len(plain.bos)
    for fill in (0, 1, 17, ALIGN - 1):
        ids, lab = aligned.sequence_example(t, seq, 1, fill)
        assert ids == ids0[:k] + [aligned.filler] * fill + ids0[k:]
        assert lab == lab0[:k] + [IGNORE] * fill + lab0[k:]
    # align = 0 with no fill is exactly the plain renderer
    assert aligned.sequence_example(t, seq, 1) == (ids0, lab0)


def _task_examples(data, r, seed, templates):
    ctx = TaskContext(data, r, max_history=20, min_context=1, windows="all")
    return build_task("next_item", ctx, templates, 2.0, random.Random(seed))


def test_next_item_task_draws_fill_counts_from_its_rng(setup):
    data, tok, plain, aligned = setup
    seq_t = [t for t in next_item_templates() if t.sequence_capable and not t.heldout]
    single_t = [t for t in next_item_templates() if not t.sequence_capable and not t.heldout]
    a = _task_examples(data, aligned, 7, seq_t)
    assert a == _task_examples(data, aligned, 7, seq_t)  # a pure function of the rng
    assert a != _task_examples(data, aligned, 8, seq_t)
    k = len(aligned.bos)
    fills = [next(j for j, x in enumerate(ids[k:]) if x != aligned.filler) for ids, _ in a]
    assert min(fills) >= 0 and max(fills) < ALIGN and len(set(fills)) > ALIGN // 2  # counts spread over 0..align-1
    for (_ids, labels), f in zip(a, fills, strict=True):
        assert labels[k: k + f] == [IGNORE] * f
    # single (prompt, target) examples: the prompt part is exactly the aligned inference prompt
    for _ids, labels in _task_examples(data, aligned, 7, single_t):
        n_prompt = next(j for j, x in enumerate(labels) if x != IGNORE)
        assert n_prompt % ALIGN == 0


def test_manifest_round_trip_and_serving_prompts(tiny_data, tmp_path):
    from generative_rec.serving.request import prepare
    from generative_rec.training import train

    cfg = load_tiny(tiny_data, tmp_path / "bundle", index={"scheme": "sequential"}, prompts={"align": ALIGN})
    cfg.train.max_steps = 2
    b = Bundle(train(cfg))
    m = json.loads((b.path / "bundle.json").read_text())
    assert m["prompt_align"] == ALIGN and m["prompt_filler"] == filler_token(b.tokenizer)
    assert b.prompt_align == ALIGN and b.renderer.filler == m["prompt_filler"]
    for hist in ([0], [1, 2, 3], list(range(8))):  # max_history is 8: prepare shows all of them
        assert len(b.prompt_ids(hist)) % ALIGN == 0
        assert prepare(b, [b.item_ids[i] for i in hist], 5).prompt == b.prompt_ids(hist)
    # a bundle written before the option (no manifest keys) reads as align 0
    del m["prompt_align"], m["prompt_filler"]
    (b.path / "bundle.json").write_text(json.dumps(m))
    old = Bundle(b.path)
    assert old.prompt_align == 0 and old.renderer.filler is None
    assert len(old.prompt_ids([0, 1])) < len(b.prompt_ids([0, 1]))


def test_auto_is_off_for_one_token_ids(tiny_bundle):
    """The default ``align: auto`` leaves one-token (atomic) IDs unaligned: one request scores them anyway."""
    m = json.loads((tiny_bundle / "bundle.json").read_text())
    assert m["scheme"] == "atomic" and m["prompt_align"] == 0 and m["prompt_filler"] is None
    b = Bundle(tiny_bundle)
    t = b.template()
    assert b.prompt_ids([0, 1]) == b.renderer.bos + b.renderer._fill(t.prompt, history=[0, 1], t=t)[0] + (
        b.renderer.text(t.sep) if t.sequence_capable else [])


def test_auto_aligns_multi_token_ids_to_the_engine_block(tiny_data, tmp_path):
    from generative_rec.config import RunConfig
    from generative_rec.decoding.vllm_engine import DEFAULT_BLOCK_SIZE
    from generative_rec.training import train

    assert RunConfig().prompts.align == "auto" and KV_BLOCK == DEFAULT_BLOCK_SIZE
    cfg = load_tiny(tiny_data, tmp_path / "bundle", index={"scheme": "sequential"})
    cfg.train.max_steps = 1
    b = Bundle(train(cfg))
    assert b.prompt_align == KV_BLOCK and b.renderer.filler == filler_token(b.tokenizer)
    assert all(len(b.prompt_ids(h)) % KV_BLOCK == 0 for h in ([0], [1, 2, 3]))


def test_resolve_align():
    assert resolve_align("auto", True) == KV_BLOCK and resolve_align("auto", False) == 0
    assert resolve_align(0, True) == 0 and resolve_align(64, False) == 64  # an explicit value is kept
    for bad in (-1, "yes", 1.5, True, None):
        with pytest.raises(ConfigError, match="prompts.align"):
            resolve_align(bad, True)


def test_config_accepts_auto_and_integers_only():
    from generative_rec.config import load_config

    assert load_config(None, ["prompts.align=auto"]).prompts.align == "auto"
    assert load_config(None, ["prompts.align=32"]).prompts.align == 32
    for bad in ("[1]", "yes", "-32"):
        with pytest.raises(ConfigError, match="prompts.align"):
            load_config(None, [f"prompts.align={bad}"])
