"""Top-W scoring (``decoding.topk``): a search fed only each beam's ``needed_width`` best live children returns
exactly what the search fed the whole distribution returns; array exclusions mean what the trie's mean."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generative_rec.decoding.beam import constrained_beam_search
from generative_rec.decoding.topk import (
    Candidates,
    Exclusion,
    children_by_token,
    max_width,
    needed_width,
    node_depth,
)
from generative_rec.trie import Trie


class DenseScorer:
    """Log-probs that depend only on (prompt, prefix): a deterministic stand-in for a model."""

    def __init__(self, vocab: int, seed: int):
        self.vocab, self.seed = vocab, seed

    def start(self, prompts):
        self.prompts = [tuple(p) for p in prompts]

    def logp(self, prompt: int, prefix: tuple[int, ...]) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((self.seed, self.prompts[prompt], prefix)) % (2**31))
        return torch.log_softmax(torch.randn(self.vocab, generator=g) * 3, dim=-1)

    def step(self, beams):
        return torch.stack([self.logp(b.prompt, b.tokens) for b in beams])


class TopWScorer(DenseScorer):
    """What the engine scorer does: per beam only its ``needed_width`` best live children — plus the kind of
    noise an engine adds (a non-child token, a -inf entry, the best child listed twice)."""

    def __init__(self, vocab, seed, trie, k, num_beams, exclude, noise=True):
        super().__init__(vocab, seed)
        self.trie, self.k, self.num_beams, self.noise = trie, k, num_beams, noise
        self.excl = [Exclusion.from_items(trie, e) for e in exclude]
        self.requests = 0

    def step(self, beams):
        parts = []
        for r, b in enumerate(beams):
            self.requests += 1
            lp = self.logp(b.prompt, b.tokens)
            toks, _ = self.excl[b.prompt].live_children(self.trie, b.node)
            w = needed_width(self.trie, b.node, self.k, self.num_beams)
            vals = lp[torch.from_numpy(toks.astype(np.int64))].numpy()
            order = np.lexsort((toks, -vals))[:w]  # best first, ties by token (what the search does)
            t, v = toks[order], vals[order]
            if self.noise and len(t):
                t = np.r_[t, t[:1], self.vocab + 3, t[:1]]
                v = np.r_[v, v[:1], -1.0, -np.inf]
            parts.append((r, t, v))
        return Candidates.concat(parts)


@st.composite
def catalogues(draw):
    vocab = draw(st.integers(3, 12))
    n = draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["fixed", "variable", "atomic"]))
    seqs: set[tuple[int, ...]] = set()
    for _ in range(n * 3):
        length = {"fixed": 3, "atomic": 1}.get(kind) or draw(st.integers(1, 4))
        seqs.add(tuple(draw(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length))))
    seqs_l = sorted(seqs, key=len)
    keep = [s for s in seqs_l if not any(o != s and o[: len(s)] == s for o in seqs_l)]
    return vocab, [list(s) for s in keep[:n]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogues(), st.integers(1, 6), st.integers(0, 6), st.integers(0, 10**6), st.data())
def test_top_w_children_give_the_same_top_k_as_the_whole_distribution(cat, k, extra_beams, seed, data):
    vocab, seqs = cat
    trie = Trie.build(seqs)
    prompts = [[1, 2], [3], [4, 5, 6]]
    exclude = [data.draw(st.lists(st.integers(0, len(seqs) - 1), max_size=len(seqs))) for _ in prompts]
    num_beams = k + extra_beams
    dense = constrained_beam_search(DenseScorer(vocab, seed), prompts, trie, k, num_beams, exclude)
    sparse = constrained_beam_search(TopWScorer(vocab, seed, trie, k, num_beams, exclude), prompts, trie, k,
                                     num_beams, exclude)
    for d, s in zip(dense, sparse, strict=True):
        assert d.items == s.items
        assert d.scores == s.scores  # bit for bit: same candidates, same arithmetic


def test_atomic_top_k_is_one_step_and_k_wide():
    trie = Trie.build([[t] for t in range(5, 505)])
    scorer = TopWScorer(600, 1, trie, 10, 10, [[3, 4]], noise=False)
    (res,) = constrained_beam_search(scorer, [[1]], trie, 10, 10, [[3, 4]])
    assert scorer.requests == 1 and len(res.items) == 10 and not {3, 4} & set(res.items)
    assert needed_width(trie, 0, 10, 40) == 10  # all children are leaves: k, whatever the beam width


def test_needed_width_rule():
    mixed = Trie.build([[1], [2, 1], [2, 2], [3, 1, 1], [4]])
    assert needed_width(mixed, 0, 2, 5) == 4  # leaves and inner children: num_beams + k - 1, capped by 4 kids
    assert needed_width(mixed, mixed.walk([2]), 2, 5) == 2  # leaves only: k
    assert needed_width(mixed, mixed.walk([3]), 2, 5) == 1  # one inner child
    assert max_width(mixed, 2, 5) == 4
    fixed = Trie.build([[a, b] for a in range(3, 9) for b in range(3, 9)])
    assert needed_width(fixed, 0, 2, 4) == 4 and needed_width(fixed, fixed.walk([3]), 2, 4) == 2
    assert max_width(fixed, 2, 4) == 4
    assert [node_depth(fixed, n) for n in (0, fixed.walk([3]), fixed.walk([3, 4]))] == [0, 1, 2]


@settings(max_examples=100, deadline=None)
@given(catalogues(), st.data())
def test_array_exclusion_matches_the_tries(cat, data):
    _, seqs = cat
    trie = Trie.build(seqs)
    items = data.draw(st.lists(st.integers(0, len(seqs) - 1), max_size=len(seqs)))
    ex = Exclusion.from_items(trie, items)
    banned = trie.exclusion(items)
    assert dict(zip(ex.nodes.tolist(), ex.counts.tolist(), strict=True)) == banned
    for node in range(trie.num_nodes):
        t1, n1 = ex.live_children(trie, node)
        t2, n2 = trie.allowed_mask_excluding(node, banned)
        assert t1.tolist() == t2.tolist() and n1.tolist() == n2.tolist()
        kids = np.arange(trie.first_child[node], trie.first_child[node + 1])
        assert ex.is_live(trie, kids).tolist() == np.isin(kids, n2).tolist()
        probe = np.r_[trie.token[kids], 10**6, -5] if len(kids) else np.array([7])
        got = children_by_token(trie, node, probe)
        assert got.tolist() == [trie.child(node, int(t)) if t >= 0 else -1 for t in probe]


def test_numpy_array_exclusions_are_accepted():
    trie = Trie.build([[1], [2], [3]])
    ex = Exclusion.from_items(trie, np.array([0, 2]))
    assert ex.live_children(trie, 0)[0].tolist() == [2]
    assert len(Exclusion.from_items(trie, None)) == 0
