"""vLLM (the fast path) and the HF reference decoders give the same top-K on the same bundle (fp32).

The reference is ``hf_generate_topk`` (plain ``model.generate`` beam search with a trie logits processor);
``hf_topk`` (the KV-cached HF scorer) is checked too. Items must agree, scores to 1e-4; only near-ties
(score gap < 1e-4, fp32 summation order) may swap.
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
    from generative_rec.serving import prepare

    ps = [prepare(bundle, u["history"], 10) for u in users[:n]]
    return [p.prompt for p in ps], [p.exclude for p in ps]


@pytest.mark.parametrize(("k", "num_beams"), [(10, None), (3, 6)])
def test_vllm_topk_equals_hf_reference(tiny_llm, bundle, hf_model, users, k, num_beams):
    from generative_rec.decoding.hf import hf_generate_topk, hf_topk
    from generative_rec.decoding.vllm_engine import llm_topk

    prompts, excl = inputs(bundle, users, 6)
    fast = llm_topk(tiny_llm.get(), bundle.trie, prompts, k, num_beams, excl)
    cached = hf_topk(hf_model, prompts, bundle.trie, k, bundle.tokenizer.pad_token_id, num_beams, excl)
    for p, e, f, c in zip(prompts, excl, fast, cached, strict=True):
        ref = hf_generate_topk(hf_model, p, bundle.trie, k, bundle.tokenizer.eos_token_id, num_beams, e)
        assert len(f.items) == k and len(set(f.items)) == k
        assert not set(f.items) & set(e)
        assert_same_topk(f.items, f.scores, ref.items, ref.scores)
        assert_same_topk(f.items, f.scores, c.items, c.scores)


def test_scores_are_raw_full_vocabulary_log_probs(tiny_llm, bundle, hf_model, users):
    """One scoring step: vLLM's log-probs of the trie-allowed tokens equal HF's full log_softmax."""
    from generative_rec.decoding.beam import Beam
    from generative_rec.decoding.vllm_engine import LLMScorer

    prompts, _ = inputs(bundle, users, 3)
    prefix = bundle.trie.sequence(7)[:2]
    node = bundle.trie.walk(prefix)
    beams = [Beam(p, tuple(prefix), node, 0.0) for p in range(len(prompts))]
    scorer = LLMScorer(tiny_llm.get(), bundle.trie)
    scorer.start(prompts)
    got = scorer.step(beams)
    kids = torch.from_numpy(bundle.trie.allowed(node).astype(np.int64))
    with torch.no_grad():
        for r, p in enumerate(prompts):
            logits = hf_model(torch.tensor([p + prefix])).logits[0, -1].float()
            want = torch.log_softmax(logits, -1)[kids]
            torch.testing.assert_close(got[r, kids], want, atol=1e-5, rtol=0)


def test_split_scoring_requests_match(tiny_llm, bundle, users):
    """A node with more children than one request may score (vLLM caps logprob_token_ids at 128) is
    scored by several requests; forcing tiny chunks must not change anything."""
    from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

    from generative_rec.decoding import vllm_engine
    from generative_rec.decoding.beam import constrained_beam_search

    assert vllm_engine.MAX_IDS_PER_REQUEST == MAX_LOGPROB_TOKEN_IDS  # the cap the engine validates against
    prompts, excl = inputs(bundle, users, 3)
    whole = vllm_engine.llm_topk(tiny_llm.get(), bundle.trie, prompts, 5, None, excl)

    splits = []

    class Chunked(vllm_engine.LLMScorer):
        def step(self, beams):
            from vllm.inputs import TokensPrompt

            plan = vllm_engine.plan_step(self.prompts, beams, self.trie, limit=3)
            splits.append(len(plan) - len(beams))
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for _, ids, _ in plan],
                                     [vllm_engine.scoring_params(t) for _, _, t in plan], use_tqdm=False)
            return vllm_engine.scatter(len(beams), self.width, plan, [vllm_engine.read_logprobs(o) for o in outs])

    split = constrained_beam_search(Chunked(tiny_llm.get(), bundle.trie), prompts, bundle.trie, 5, None, excl)
    assert max(splits) > 0  # some beams were scored by more than one request
    for a, b in zip(whole, split, strict=True):
        assert_same_topk(a.items, a.scores, b.items, b.scores)


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
