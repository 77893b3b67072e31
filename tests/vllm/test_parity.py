"""vLLM (the fast path) and the HF reference decoders give the same top-K on the same bundle (fp32).

The reference is ``hf_generate_topk`` (plain ``model.generate`` beam search with a trie logits processor);
``hf_topk`` (the KV-cached HF scorer) is checked too. Items must agree, scores to 1e-4; only near-ties
(score gap < 1e-4, fp32 summation order) may swap. Also: the engine's top-W scoring returns full-vocabulary
log-probs, look-ahead changes nothing but the request count, and plain completions keep the model's log-probs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vllm_helpers import assert_same_topk

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def hf_model(tiny_bundle):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_bundle / "model", dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    from generative_rec.bundle import Bundle

    return Bundle(tiny_bundle)


def inputs(bundle, users, n):
    from generative_rec.serving.request import prepare

    ps = [prepare(bundle, u["history"], 10) for u in users[:n]]
    return [p.prompt for p in ps], [p.exclude for p in ps]


@pytest.mark.parametrize(("k", "num_beams"), [(10, None), (3, 6)])
def test_vllm_topk_equals_hf_reference(tiny_llm, bundle, hf_model, users, k, num_beams):
    from generative_rec.decoding.hf import hf_generate_topk, hf_topk
    from generative_rec.decoding.vllm_engine import llm_topk

    prompts, excl = inputs(bundle, users, 6)
    fast = llm_topk(tiny_llm.get(), bundle.trie, prompts, k, num_beams, excl, item_ids=bundle.item_ids)
    cached = hf_topk(hf_model, prompts, bundle.trie, k, bundle.tokenizer.pad_token_id, num_beams, excl)
    for p, e, f, c in zip(prompts, excl, fast, cached, strict=True):
        ref = hf_generate_topk(hf_model, p, bundle.trie, k, bundle.tokenizer.eos_token_id, num_beams, e)
        assert len(f.items) == k and len(set(f.items)) == k
        assert not set(f.items) & set(e)
        assert_same_topk(f.items, f.scores, ref.items, ref.scores)
        assert_same_topk(f.items, f.scores, c.items, c.scores)


def test_engine_returns_the_best_allowed_children_with_full_vocabulary_log_probs(tiny_llm, bundle, hf_model, users):
    """One scoring step: the engine's top-W are the W best live children (exclusions masked in the engine)
    with HF's full-vocabulary log_softmax values — not renormalised over the allowed tokens."""
    from generative_rec.decoding.beam import Beam
    from generative_rec.decoding.topk import Exclusion, needed_width
    from generative_rec.decoding.vllm_engine import EngineScorer, llm_run

    prompts, excl = inputs(bundle, users, 3)
    prefix = bundle.trie.sequence(7)[:1]
    node = bundle.trie.walk(prefix)
    k, nb = 2, 3
    scorer = EngineScorer(llm_run(tiny_llm.get()), bundle.trie, bundle.item_ids, k, nb, excl, lookahead=False)
    scorer.start(prompts)
    got = scorer.step([Beam(p, tuple(prefix), node, 0.0) for p in range(len(prompts))])
    assert scorer.requests == len(prompts)
    w = needed_width(bundle.trie, node, k, nb)
    with torch.no_grad():
        for r, p in enumerate(prompts):
            want = torch.log_softmax(hf_model(torch.tensor([p + prefix])).logits[0, -1].float(), -1)
            live, _ = Exclusion.from_items(bundle.trie, excl[r]).live_children(bundle.trie, node)
            assert 0.0 < float(torch.logsumexp(want[torch.from_numpy(live.astype(np.int64))], 0).exp()) < 0.99
            best = sorted(live.tolist(), key=lambda t: -float(want[t]))[:w]
            mine = {int(t): float(v) for t, v in zip(got.token[got.row == r], got.logprob[got.row == r], strict=True)
                    if int(t) in set(live.tolist())}
            assert set(best) <= set(mine)  # every needed child came back (ties at the cut may add one more)
            for t in best:
                assert abs(mine[t] - float(want[t])) < 1e-5, (t, mine[t], float(want[t]))


def test_look_ahead_changes_only_the_request_count(tiny_llm, bundle, users):
    """Scores taken from an earlier request's greedy look-ahead are the scores a fresh request gives; the
    number of engine requests per recommendation stays within beams x depth."""
    from generative_rec.decoding.beam import SearchStats
    from generative_rec.decoding.vllm_engine import llm_topk

    prompts, excl = inputs(bundle, users, 6)
    stats = {}
    res = {}
    for la in (False, True):
        stats[la] = SearchStats()
        res[la] = llm_topk(tiny_llm.get(), bundle.trie, prompts, 5, 8, excl, item_ids=bundle.item_ids,
                           stats=stats[la], lookahead=la)
    for a, b in zip(res[False], res[True], strict=True):
        assert_same_topk(a.items, a.scores, b.items, b.scores)
    per_rec = {la: stats[la].extra["requests"] / len(prompts) for la in res}
    assert per_rec[True] <= per_rec[False] <= 8 * bundle.trie.max_depth
    assert stats[True].extra["positions"] >= stats[True].extra["requests"]


def test_plain_completion_logprobs_are_the_models(tiny_llm, bundle, hf_model, users):
    """The engine runs with logprobs_mode=processed_logprobs (scoring needs it). For requests that do not
    reshape the distribution (greedy or temperature 1, no top-k/top-p/penalties) the log-probs a client gets
    are still the model's raw full-vocabulary ones, equal to HF's."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts, _ = inputs(bundle, users, 2)
    for temperature in (0.0, 1.0):
        outs = tiny_llm.get().generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                                       SamplingParams(max_tokens=1, temperature=temperature, logprobs=5, seed=3),
                                       use_tqdm=False)
        for p, o in zip(prompts, outs, strict=True):
            with torch.no_grad():
                want = torch.log_softmax(hf_model(torch.tensor([p])).logits[0, -1].float(), -1)
            got = o.outputs[0].logprobs[0]
            assert len(got) >= 5
            for t, lp in got.items():
                assert abs(lp.logprob - float(want[t])) < 1e-5, (temperature, t, lp.logprob, float(want[t]))
            top5 = torch.topk(want, 5).indices.tolist()
            assert set(top5) <= set(got)


def test_greedy_constrained_completion_equals_hf_greedy(tiny_llm, bundle, hf_model, users):
    """The logits processor (what /v1/completions uses) decodes greedily exactly like HF + trie processor."""
    from transformers import LogitsProcessorList
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from generative_rec.decoding.hf import TrieLogitsProcessor
    from generative_rec.decoding.vllm_processor import constrained_args

    prompts, _ = inputs(bundle, users, 4)
    eos = bundle.tokenizer.eos_token_id
    outs = tiny_llm.get().generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                                   SamplingParams(max_tokens=12, temperature=0.0, extra_args=constrained_args()),
                                   use_tqdm=False)
    for p, o in zip(prompts, outs, strict=True):
        toks = list(o.outputs[0].token_ids)
        assert toks[-1] == eos and o.outputs[0].finish_reason == "stop"
        ids = torch.tensor([p])
        ref = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                max_new_tokens=bundle.trie.max_depth + 1, pad_token_id=eos, eos_token_id=eos,
                                logits_processor=LogitsProcessorList([TrieLogitsProcessor(bundle.trie, len(p), eos)]))
        assert toks == ref[0, len(p):].tolist()
        assert bundle.trie.item_of(toks[:-1]) >= 0


def test_aligned_prompts_match_hf_and_every_beam_request_reuses_the_whole_prompt(aligned_llm, aligned_bundle, users):
    """A bundle trained with ``prompts.align: 32`` (the engine's block size): vLLM and HF still agree on the
    top-K of the bundle's (aligned) prompts, and every request after a prompt's first finds ALL of the
    prompt's KV in the prefix cache — the point of aligning (unaligned, its last partial block is recomputed)."""
    from transformers import AutoModelForCausalLM

    from generative_rec.bundle import Bundle
    from generative_rec.decoding.hf import hf_generate_topk, hf_topk
    from generative_rec.decoding.vllm_engine import EngineScorer, llm_run, search_topk

    b = Bundle(aligned_bundle)
    hf = AutoModelForCausalLM.from_pretrained(aligned_bundle / "model", dtype=torch.float32).eval()
    prompts, excl = inputs(b, users, 6)
    assert b.prompt_align == 32 and all(len(p) % 32 == 0 for p in prompts)
    run, seen = llm_run(aligned_llm.get()), []

    def spy(reqs):
        outs = run(reqs)
        seen.extend((ids, o.num_cached_tokens) for (ids, _), o in zip(reqs, outs, strict=True))
        return outs

    scorer = EngineScorer(spy, b.trie, b.item_ids, 10, None, excl)
    fast = search_topk(scorer, prompts, b.trie, 10, None, excl, None)
    cached = hf_topk(hf, prompts, b.trie, 10, b.tokenizer.pad_token_id, None, excl)
    for p, e, f, c in zip(prompts, excl, fast, cached, strict=True):
        ref = hf_generate_topk(hf, p, b.trie, 10, b.tokenizer.eos_token_id, None, e)
        assert_same_topk(f.items, f.scores, ref.items, ref.scores)
        assert_same_topk(f.items, f.scores, c.items, c.scores)
    beam_requests = [(ids, n) for ids, n in seen if not any(ids == p for p in prompts)]
    assert beam_requests, "the search sent no request past a prompt's first"
    for ids, n in beam_requests:
        plen = next(len(p) for p in prompts if ids[: len(p)] == p)
        assert n is not None and n >= plen, (plen, len(ids), n)
