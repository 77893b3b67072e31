"""``genrec generate --explain``: one explanation per recommended item, on the batch job's own vLLM engine.

The explanation contract is ``generative_rec.explain`` (prompt ids, greedy settings, clean-up); the server's
``"explain": true`` follows it too. Checked here on a tiny bundle trained with the explain task
(``explain_bundle``): every item of every row gets a text; the top-K is the one written without
``--explain``; all of a window's explanations go to the engine in ONE ``generate`` call, with the contract's
prompt for exactly that (history, item) and its sampling settings; the texts equal the HF reference
(``explain.explain_items``, greedy) token for token; resume keeps its semantics; a bundle not trained to
explain fails before anything runs.
"""

from __future__ import annotations

import pytest
import torch
from vllm_helpers import assert_same_topk, read_jsonl, write_jsonl

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def bundle(explain_bundle):
    from generative_rec.bundle import Bundle

    return Bundle(explain_bundle)


class SpyLLM:
    """Passes everything to the real ``vllm.LLM`` and records the explanation calls (one ``SamplingParams``
    for all prompts; the beam search sends a list of per-request scoring params)."""

    def __init__(self, llm):
        self.llm, self.explain_calls = llm, []
        self.llm_engine = llm.llm_engine  # the scorer checks the engine's logprobs mode through it

    def generate(self, prompts, params, **kw):
        outs = self.llm.generate(prompts, params, **kw)
        if not isinstance(params, list):
            self.explain_calls.append(([list(p["prompt_token_ids"]) for p in prompts], params, outs))
        return outs


def run(bundle_dir, rows, out, llm, **kw):
    from generative_rec.generate import GenerateOptions, generate

    inp = write_jsonl(out.with_suffix(".in.jsonl"), rows)
    return generate(
        GenerateOptions(bundle=str(bundle_dir), input=str(inp), output=str(out), **kw),
        llm=llm,
        progress=False,
    )


def test_batch_explanations_follow_the_contract_and_equal_the_hf_reference(
    explain_bundle, bundle, explain_llm, users, tmp_path
):
    from transformers import AutoModelForCausalLM

    from generative_rec.explain.contract import explain_prompt_ids, explain_settings, vllm_sampling_kwargs
    from generative_rec.explain.hf import explain_items

    rows = users[:6]
    spy = SpyLLM(explain_llm.get())
    s = run(explain_bundle, rows, tmp_path / "explained.jsonl", spy, k=5, batch_size=3, explain=True)
    run(explain_bundle, rows, tmp_path / "plain.jsonl", explain_llm.get(), k=5, batch_size=3)
    explained, plain = read_jsonl(tmp_path / "explained.jsonl"), read_jsonl(tmp_path / "plain.jsonl")
    assert s["explain"]["explanations"] == 6 * 5

    # every item has a one-line, non-empty text; the top-K is the one written without --explain
    for e, p in zip(explained, plain, strict=True):
        assert e["user_id"] == p["user_id"] and e["history_used"] == p["history_used"]
        assert all(
            isinstance(i["explanation"], str) and i["explanation"] and "\n" not in i["explanation"]
            for i in e["items"]
        ), e
        assert_same_topk(
            [i["item_id"] for i in e["items"]],
            [i["score"] for i in e["items"]],
            [i["item_id"] for i in p["items"]],
            [i["score"] for i in p["items"]],
        )
        assert all(set(i) == {"item_id", "title", "score"} for i in p["items"])

    # one engine call per window (2 windows of 3 users), the contract's prompt for each item, in output order
    settings = explain_settings(bundle)
    assert len(spy.explain_calls) == 2
    expected = [
        explain_prompt_ids(bundle, bundle.lookup(u["history"]), bundle._by_id[i["item_id"]])
        for u, r in zip(rows, explained, strict=True)
        for i in r["items"]
    ]
    sent = [p for prompts, _, _ in spy.explain_calls for p in prompts]
    assert sent == expected
    kw = vllm_sampling_kwargs(settings)
    for _, params, _ in spy.explain_calls:
        assert params.max_tokens == kw["max_tokens"] == 64 and params.temperature == 0.0
        assert params.stop_token_ids == kw["stop_token_ids"] == [bundle.tokenizer.eos_token_id]
        assert (params.logit_bias or {}) == kw["logit_bias"]

    # greedy parity with the HF reference (text after clean-up, and the raw token ids)
    model = AutoModelForCausalLM.from_pretrained(bundle.model_dir, dtype=torch.float32).eval()
    outs = [o for _, _, window in spy.explain_calls for o in window]
    for n, (u, r) in enumerate(zip(rows[:2], explained[:2], strict=True)):
        items = [bundle._by_id[i["item_id"]] for i in r["items"]]
        ref = explain_items(bundle, model, bundle.lookup(u["history"]), items)
        assert [i["explanation"] for i in r["items"]] == ref
        for j, item in enumerate(items):
            prompt = explain_prompt_ids(bundle, bundle.lookup(u["history"]), item)
            hf = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                eos_token_id=settings.eos_token_id,
                pad_token_id=bundle.tokenizer.pad_token_id,
            )
            assert list(outs[n * 5 + j].outputs[0].token_ids) == hf[0, len(prompt) :].tolist()


def test_explain_resume_keeps_whole_lines_and_refuses_a_mixed_file(
    explain_bundle, explain_llm, users, tmp_path
):
    from generative_rec.errors import DataError

    rows = users[6:11]
    full = tmp_path / "full.jsonl"
    run(explain_bundle, rows, full, explain_llm.get(), k=3, batch_size=2, explain=True)
    ref = read_jsonl(full)
    part = tmp_path / "part.jsonl"
    lines = full.read_bytes().splitlines(keepends=True)
    part.write_bytes(
        b"".join(lines[:2]) + b'{"user_id": "torn", "items": [{"item_id": "i1", "expl'
    )  # a kill mid-write
    s = run(explain_bundle, rows, part, explain_llm.get(), k=3, batch_size=2, explain=True, resume=True)
    assert s["skipped_done"] == 2 and s["written"] == 3
    after = read_jsonl(part)
    assert [r["user_id"] for r in after] == [r["user_id"] for r in ref]  # nothing lost, nothing twice
    assert after == ref  # same items, same explanations
    with pytest.raises(DataError, match="written with --explain"):  # before any decoding
        run(explain_bundle, rows, part, None, k=3, resume=True)


def test_explain_needs_a_bundle_trained_to_explain(tiny_bundle, users, tmp_path, capsys):
    """The tiny bundle was trained on next_item only: --explain fails before the output or an engine is touched."""
    from generative_rec.cli import main
    from generative_rec.errors import ConfigError

    inp = write_jsonl(tmp_path / "i.jsonl", users[:2])
    out = tmp_path / "o.jsonl"
    with pytest.raises(SystemExit) as e:
        main(
            ["generate", "--bundle", str(tiny_bundle), "--input", str(inp), "--output", str(out), "--explain"]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--explain" in err and "not trained with the explain task" in err, err
    assert not out.exists()
    with pytest.raises(ConfigError, match="not trained with the explain task"):
        run(tiny_bundle, users[:2], out, None, explain=True)
