"""Trie-constrained beam search, independent of the engine that produces log-probabilities.

The search asks a *scorer* for next-token log-probabilities of a batch of (prompt, prefix) rows and keeps,
per prompt, the ``num_beams`` best prefixes that the trie allows. A prefix that reaches a trie leaf is a
finished item. The score of an item is its sequence log-probability: the sum over its ID tokens of the
model's full-vocabulary ``log_softmax`` (the constraint masks, it does not renormalise) — the same number
HF ``generate`` beam search reports with a trie logits processor and ``length_penalty=0``.

Top-K therefore returns K *distinct* catalogue items (each leaf is one item) ranked by sequence
log-probability. Items can be excluded per prompt (e.g. the user's history).

Engines implement :class:`Scorer`; ``decoding.hf`` runs HF models with a KV cache and returns the whole
distribution of every beam; ``decoding.vllm_engine`` runs vLLM and returns, per beam, only the best live
children the search can use (:class:`~generative_rec.decoding.topk.Candidates`, how many:
:func:`~generative_rec.decoding.topk.needed_width`). Both feed the same search below.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from generative_rec.decoding.topk import Candidates, Exclusion, children_by_token
from generative_rec.trie import Trie


@dataclass
class Ranked:
    """Top-K for one prompt: dense item indices and their sequence log-probabilities, best first; ``tokens``:
    the generated ID tokens of each (what an independent check parses back to items, without the trie)."""

    items: list[int]
    scores: list[float]
    tokens: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class Beam:
    prompt: int  # index of the prompt in the batch
    tokens: tuple[int, ...]  # ID tokens chosen so far
    node: int  # trie node reached
    score: float
    parent_row: int = -1  # row of the parent beam in the previous scorer call (-1 at the start)


class Scorer(Protocol):
    """Produces next-token log-probabilities for beams.

    ``start(prompts)`` is called once; then ``step(beams)`` for each decoding step with the live beams
    (``beam.parent_row`` is the row of the beam it extends in the previous step's output, so an engine
    with a KV cache can reorder it). It returns the full-vocabulary log_softmax of the next token after
    ``prompt + beam.tokens``, either

    - dense: a float tensor ``[len(beams), vocab]`` (the search reads each beam's live children), or
    - sparse: :class:`~generative_rec.decoding.topk.Candidates` holding, for each beam, at least its
      ``needed_width(trie, beam.node, k, num_beams)`` best live children (children of excluded items only
      are not live). Entries that are not live children of the beam's node are ignored.
    """

    def start(self, prompts: Sequence[Sequence[int]]) -> None: ...

    def step(self, beams: Sequence[Beam]) -> torch.Tensor | Candidates: ...


@dataclass
class SearchStats:
    steps: int = 0
    rows: int = 0
    model_seconds: float = 0.0
    mask_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def constrained_beam_search(
    scorer: Scorer,
    prompts: Sequence[Sequence[int]],
    trie: Trie,
    k: int,
    num_beams: int | None = None,
    exclude: Sequence[Iterable[int]] | None = None,
    stats: SearchStats | None = None,
) -> list[Ranked]:
    """Top-``k`` distinct catalogue items for each prompt (fewer only if fewer items remain)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    num_beams = max(k, num_beams or k)
    n = len(prompts)
    excl = [Exclusion.from_items(trie, e) for e in (exclude or [None] * n)]
    finished: list[list[tuple[float, int, tuple[int, ...]]]] = [[] for _ in range(n)]
    beams = [Beam(p, (), Trie.ROOT, 0.0) for p in range(n)]
    stats = stats or SearchStats()
    t0 = time.perf_counter()
    scorer.start(prompts)
    stats.model_seconds += time.perf_counter() - t0
    while beams:
        t0 = time.perf_counter()
        out = scorer.step(beams)
        t1 = time.perf_counter()
        stats.model_seconds += t1 - t0
        stats.steps += 1
        stats.rows += len(beams)
        if isinstance(out, Candidates):
            cand = _sparse_candidates(out, beams, trie, excl)
        else:
            cand = _dense_candidates(out, beams, trie, excl)
        if cand is None:
            break
        cp, cb, ct, cn, cs = cand
        # Per prompt: the best num_beams candidates (stable: by score desc, then token id asc).
        order = np.lexsort((ct, -cs, cp))
        cp, cb, ct, cn, cs = cp[order], cb[order], ct[order], cn[order], cs[order]
        starts = np.flatnonzero(np.r_[True, cp[1:] != cp[:-1]])
        ends = np.r_[starts[1:], len(cp)]
        new_beams: list[Beam] = []
        done = set()
        for lo, hi in zip(starts, ends, strict=True):
            # Walk the candidates best first: complete IDs are finished items; the first num_beams
            # incomplete ones stay live (complete IDs ranked below the last live beam are dropped).
            p = int(cp[lo])
            live = 0
            best_live = -np.inf
            for j in range(lo, hi):
                node = int(cn[j])
                parent = beams[int(cb[j])]
                if trie.leaf_item[node] >= 0:
                    finished[p].append((float(cs[j]), int(trie.leaf_item[node]), parent.tokens + (int(ct[j]),)))
                else:
                    new_beams.append(Beam(p, parent.tokens + (int(ct[j]),), node, float(cs[j]), int(cb[j])))
                    best_live = max(best_live, float(cs[j]))
                    live += 1
                    if live == num_beams:
                        break
            # Scores only fall as a prefix grows: once k finished items beat every live beam, stop.
            if len(finished[p]) >= k:
                kth = sorted((f[0] for f in finished[p]), reverse=True)[k - 1]
                if best_live <= kth:
                    done.add(p)
        beams = [b for b in new_beams if b.prompt not in done]
        stats.mask_seconds += time.perf_counter() - t1
    out = []
    for p in range(n):
        best = sorted(finished[p], key=lambda x: (-x[0], x[1]))[:k]
        out.append(Ranked([f[1] for f in best], [f[0] for f in best], [f[2] for f in best]))
    return out


def _dense_candidates(logp: torch.Tensor, beams: Sequence[Beam], trie: Trie, excl: Sequence[Exclusion]):
    """``(prompt, beam row, token, node, score)`` arrays of every live child of every beam."""
    logp = logp.float().cpu()
    cand_prompt, cand_beam, cand_tok, cand_node, cand_score = [], [], [], [], []
    for row, b in enumerate(beams):
        toks, nodes = excl[b.prompt].live_children(trie, b.node)
        if len(toks) == 0:
            continue
        s = logp[row, torch.from_numpy(toks.astype(np.int64))].numpy() + b.score
        cand_prompt.append(np.full(len(toks), b.prompt))
        cand_beam.append(np.full(len(toks), row))
        cand_tok.append(toks)
        cand_node.append(nodes)
        cand_score.append(s)
    if not cand_prompt:
        return None
    return (np.concatenate(cand_prompt), np.concatenate(cand_beam), np.concatenate(cand_tok),
            np.concatenate(cand_node), np.concatenate(cand_score).astype(np.float64))


def _sparse_candidates(c: Candidates, beams: Sequence[Beam], trie: Trie, excl: Sequence[Exclusion]):
    """The same arrays from a sparse step output: entries mapped to child nodes; anything that is not a live
    child of its beam's node (or has no finite log-prob, or repeats) is dropped."""
    rows = np.asarray(c.row, dtype=np.int64)
    toks = np.asarray(c.token, dtype=np.int64)
    lps = np.asarray(c.logprob, dtype=np.float32)
    nodes = np.full(len(rows), -1, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    rows, toks, lps = rows[order], toks[order], lps[order]
    bounds = np.searchsorted(rows, np.arange(len(beams) + 1))
    for r, b in enumerate(beams):
        lo, hi = bounds[r], bounds[r + 1]
        if hi > lo:
            nodes[lo:hi] = children_by_token(trie, b.node, toks[lo:hi])
            ok = nodes[lo:hi] >= 0
            if len(excl[b.prompt]) and ok.any():
                live = excl[b.prompt].is_live(trie, nodes[lo:hi][ok])
                sub = nodes[lo:hi]
                idx = np.flatnonzero(ok)[~live]
                sub[idx] = -1
    keep = (nodes >= 0) & np.isfinite(lps)
    rows, toks, lps, nodes = rows[keep], toks[keep], lps[keep], nodes[keep]
    if len(rows) == 0:
        return None
    # one entry per (beam, child): an engine may list a token twice (e.g. the sampled one)
    _, first = np.unique(rows * (int(trie.num_nodes) + 1) + nodes, return_index=True)
    rows, toks, lps, nodes = rows[first], toks[first], lps[first], nodes[first]
    # same arithmetic as the dense path: float32 log-prob + the beam's score (as float32), then float64
    base = np.asarray([b.score for b in beams], dtype=np.float32)
    prompts = np.asarray([b.prompt for b in beams], dtype=np.int64)
    scores = (lps + base[rows]).astype(np.float64)
    return prompts[rows], rows, toks, nodes, scores
