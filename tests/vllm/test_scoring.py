"""Top-W scoring inside the engine: engine requests per recommendation do not grow with the catalogue.

Two levels:

- *Engine emulation* (no engine start, seconds): the real trie logits processor (``TrieLogitsProcessor``)
  and the real scorer (``EngineScorer``) over a stand-in for vLLM's sampler — deterministic random logits
  per token sequence, the processor's ``apply``, ``log_softmax`` (``processed_logprobs``), top-``logprobs``,
  greedy next token — on synthetic catalogues of 1k, 10k and 100k atomic items and on multi-token tries of
  growing fan-out. Requests per recommendation: 1 for atomic IDs, at most ``beams x depth`` otherwise,
  whatever the fan-out; top-K equal to the search fed the whole distribution.
- *Real engine*: a tiny bundle with atomic IDs (150 items at the root, more than the 128 ids one
  ``logprob_token_ids`` request may score) gives HF's top-K with ONE engine request per recommendation.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from vllm_helpers import assert_same_topk

from generative_rec.decoding.beam import SearchStats, constrained_beam_search
from generative_rec.trie import Trie

pytestmark = pytest.mark.vllm


# ------------------------------------------------------------------------------------------- engine emulation
class FakeEngine:
    """``run`` for ``EngineScorer``: what vLLM's V1 sampler does with a greedy scoring request, per position."""

    def __init__(self, trie: Trie, vocab: int, eos: int, seed: int = 0):
        from generative_rec.decoding.vllm_processor import TrieLogitsProcessor, TrieSpec

        self.vocab, self.eos, self.seed = vocab, eos, seed
        self.item_ids = [f"it{i}" for i in range(trie.num_items)]
        self.proc = TrieLogitsProcessor.__new__(TrieLogitsProcessor)
        self.spec = spec = TrieSpec(trie, self.item_ids, eos)
        self.proc.spec_for_request = lambda extra_args: spec
        self.proc.rows, self.proc._exclusions = {}, {}
        self.requests = 0

    def logits(self, ids) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((self.seed, tuple(ids))) % (2**31))
        return torch.randn(self.vocab, generator=g) * 2

    def logp(self, ids) -> torch.Tensor:
        return torch.log_softmax(self.logits(ids), -1)

    def __call__(self, reqs):
        outs = []
        for ids, params in reqs:
            self.requests += 1
            generated: list[int] = []
            self.proc.rows = {0: self.proc._new_row(params, ids, generated)}
            positions = []
            for _ in range(params.max_tokens):
                row = self.proc.apply(self.logits(list(ids) + generated)[None].clone())
                lp = torch.log_softmax(row, -1)[0]  # processed_logprobs
                vals, top = torch.topk(lp, params.logprobs)
                positions.append({int(t): SimpleNamespace(logprob=float(v)) for t, v in zip(top, vals, strict=True)})
                generated.append(int(torch.argmax(lp)))  # greedy
                if generated[-1] == self.eos:
                    break
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(generated), logprobs=positions)]))
        return outs


class Dense:
    """The same model, whole distributions (what HF's scorer returns)."""

    def __init__(self, engine: FakeEngine):
        self.engine = engine

    def start(self, prompts):
        self.prompts = [list(p) for p in prompts]

    def step(self, beams):
        return torch.stack([self.engine.logp(self.prompts[b.prompt] + list(b.tokens)) for b in beams])


def run_both(trie: Trie, vocab: int, k: int, num_beams: int, n_prompts: int = 3, lookahead: bool = True):
    from generative_rec.decoding.vllm_engine import EngineScorer

    rng = np.random.default_rng(trie.num_items)
    prompts = [list(rng.integers(0, vocab, 6)) for _ in range(n_prompts)]
    excl = [list(rng.choice(trie.num_items, 20, replace=False)) for _ in prompts]
    eng = FakeEngine(trie, vocab, eos=vocab - 1)
    scorer = EngineScorer(eng, trie, eng.item_ids, k, num_beams, excl, lookahead=lookahead)
    stats = SearchStats()
    sparse = constrained_beam_search(scorer, prompts, trie, k, num_beams, excl, stats=stats)
    dense = constrained_beam_search(Dense(eng), prompts, trie, k, num_beams, excl)
    for s, d, e in zip(sparse, dense, excl, strict=True):
        assert len(s.items) == k and not set(s.items) & set(e)
        assert_same_topk(s.items, s.scores, d.items, d.scores, tol=1e-5)
    assert eng.requests == scorer.requests
    return eng.requests / n_prompts, stats.steps


@pytest.mark.parametrize("n_items", [1_000, 10_000, 100_000])
def test_atomic_top_k_is_one_engine_request_whatever_the_catalogue(n_items):
    trie = Trie.build([[t] for t in range(n_items)])  # one token per item; tokens >= n_items are text
    per_rec, steps = run_both(trie, n_items + 50, k=10, num_beams=10)
    assert per_rec == 1 and steps == 1


@pytest.mark.parametrize("fanout", [8, 40, 200])
def test_multi_token_requests_stay_within_beams_times_depth(fanout):
    """Three-level IDs with ``fanout`` codes per level (512 to 8 M possible IDs, 3,000 items): the request
    count is bounded by beams x depth, not by the number of children of a node."""
    rng = np.random.default_rng(fanout)
    codes = sorted({tuple(int(x) for x in rng.integers(0, fanout, 3)) for _ in range(3_000)})
    seqs = [[c[0], fanout + c[1], 2 * fanout + c[2]] for c in codes]  # distinct tokens per level
    trie = Trie.build(seqs)
    for lookahead in (False, True):
        per_rec, _ = run_both(trie, 3 * fanout + 50, k=10, num_beams=10, lookahead=lookahead)
        assert per_rec <= 10 * trie.max_depth, (fanout, lookahead, per_rec)


def test_mixed_length_ids_use_the_wider_rule():
    """IDs of different lengths (a node with leaf and inner children): exact top-K from top-(beams+k-1)."""
    rng = np.random.default_rng(5)
    seqs = set()
    while len(seqs) < 400:
        seqs.add(tuple(int(x) for x in rng.integers(0, 12, int(rng.integers(1, 4)))))
    seqs = sorted(seqs, key=len)
    seqs = [list(s) for s in seqs if not any(o != s and o[: len(s)] == s for o in seqs)]
    per_rec, _ = run_both(Trie.build(seqs), 60, k=5, num_beams=7)
    assert per_rec <= 7 * 3


def test_scoring_rows_sum_to_one_and_keep_the_models_values():
    """The processor's row: full-vocabulary log-probs on live children, the rest spread over sinks; normalised,
    so processed_logprobs returns the values unchanged. Every sink share stays below the W-th best child, so
    the top-W of the row are the W best children and greedy look-ahead follows the best one — unless even all
    free tokens cannot carry the rest that thinly (then one sink takes it and the top-W are still right)."""
    from generative_rec.decoding.vllm_engine import scoring_params

    trie = Trie.build([[a, 10 + b] for a, b in itertools.product(range(10), range(10))])
    eng = FakeEngine(trie, 80, eos=79)
    kinds = set()
    for boost in (-6.0, 0.0, 2.0, 8.0):  # from "children hold almost no mass" to "children hold most of it"
        logits = torch.randn(1, 80, generator=torch.Generator().manual_seed(1)) * 2
        logits[0, :10] += boost
        w = 4
        eng.proc.rows = {0: eng.proc._new_row(scoring_params(w, (), ["it3"], 2), [1], [])}
        row = eng.proc.apply(logits.clone())[0]
        raw = torch.log_softmax(logits[0], -1)
        assert abs(float(torch.logsumexp(row, 0))) < 1e-5
        kids = list(range(10))
        torch.testing.assert_close(row[kids], raw[kids])
        sinks = eng.spec.sinks(80)
        assert not set(sinks.tolist()) & (set(trie.token[1:].tolist()) | {79})
        assert set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) <= set(kids) | set(sinks.tolist())
        best_w = sorted(kids, key=lambda t: -float(raw[t]))[:w]
        top = torch.topk(row, w + 1).indices.tolist()
        assert set(best_w) <= set(top)  # the W best children always come back in logprobs = W + 1
        p_w = float(raw[best_w[-1]].exp())
        if float(torch.logsumexp(raw[10:], 0).exp()) / p_w < len(sinks):
            assert set(top[:w]) == set(best_w) and int(torch.argmax(row)) == best_w[0]
            kinds.add("spread")
        else:
            kinds.add("one sink")
    assert kinds == {"spread", "one sink"}  # both regimes were exercised


# ------------------------------------------------------------------------------------------- real engine
def test_atomic_bundle_one_engine_request_per_recommendation(atomic_llm, atomic_bundle, users):
    from transformers import AutoModelForCausalLM

    from generative_rec.bundle import Bundle
    from generative_rec.decoding.hf import hf_generate_topk
    from generative_rec.decoding.vllm_engine import llm_topk
    from generative_rec.serving.request import prepare

    b = Bundle(atomic_bundle)
    assert b.trie.max_depth == 1 and len(b.trie.allowed(0)) > 128
    ps = [prepare(b, u["history"], 10) for u in users[:6]]
    stats = SearchStats()
    fast = llm_topk(atomic_llm.get(), b.trie, [p.prompt for p in ps], 10, None, [p.exclude for p in ps],
                    item_ids=b.item_ids, stats=stats)
    assert stats.extra["requests"] == len(ps) and stats.steps == 1  # one forward pass per recommendation
    model = AutoModelForCausalLM.from_pretrained(b.model_dir, dtype=torch.float32).eval()
    for p, f in zip(ps, fast, strict=True):
        ref = hf_generate_topk(model, p.prompt, b.trie, 10, b.tokenizer.eos_token_id, exclude=p.exclude)
        assert len(set(f.items)) == 10 and not set(f.items) & set(p.exclude)
        assert_same_topk(f.items, f.scores, ref.items, ref.scores)
