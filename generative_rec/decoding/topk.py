"""What a top-W scorer must return for the beam search to stay exact, and per-request exclusions as arrays.

Pure numpy over a :class:`~generative_rec.trie.Trie` (nothing about models, engines or HTTP). Shared by the
beam search (``decoding.beam``), the vLLM scorer (``decoding.vllm_engine``) and the vLLM logits processor
(``decoding.vllm_processor``), so the engine and the search agree on which children are live and how many
of them a step needs.

**Why the best few children of a beam suffice.** The search sorts all candidates of a prompt by score and
walks them best first: a complete ID is a finished item, an incomplete one a live beam, until ``num_beams``
live beams are taken. Within one beam, children come in the order of their log-probabilities (the beam's
own score is a common offset). So a child ranked after ``num_beams`` live siblings is never reached, and a
child ranked after ``k`` finished siblings (leaves) can never enter the top ``k``: it, and everything below
it, scores less than ``k`` items already found. Neither can it change the stopping rule, which only looks at
the ``k`` best finished items and the best live beam. A beam therefore needs at most

- ``k`` children when all its children are leaves (atomic IDs, the last level of fixed-length IDs),
- ``num_beams`` when none is a leaf,
- ``num_beams + k - 1`` when it has both (variable-length IDs),

and never more than it has. :func:`needed_width` is that rule; ``tests/unit/test_topk.py`` checks that a
search fed only these children returns the same top-K as one fed the full distribution.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from generative_rec.trie import Trie


# --------------------------------------------------------------------------- sparse step output
@dataclass
class Candidates:
    """A scorer's sparse step output: for some children of some beams, their full-vocabulary log-prob.

    ``row[j]`` is the beam (its row in the step's ``beams``), ``token[j]`` the next token and ``logprob[j]``
    its log-probability. Tokens that are not live children of the beam's node are ignored by the search.
    """

    row: np.ndarray
    token: np.ndarray
    logprob: np.ndarray

    @classmethod
    def concat(cls, parts: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> Candidates:
        """From ``(row, tokens, logprobs)`` per beam."""
        rows, toks, lps = [], [], []
        for r, t, lp in parts:
            rows.append(np.full(len(t), r, dtype=np.int64))
            toks.append(np.asarray(t, dtype=np.int64))
            lps.append(np.asarray(lp, dtype=np.float32))
        if not rows:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        return cls(np.concatenate(rows), np.concatenate(toks), np.concatenate(lps))


# --------------------------------------------------------------------------- width rule
_KINDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _kinds(trie: Trie) -> tuple[np.ndarray, np.ndarray]:
    """Per node: number of children, number of children that are leaves (cached per trie)."""
    got = _KINDS.get(trie)
    if got is None:
        n_kids = np.diff(trie.first_child).astype(np.int64)
        leaves = np.flatnonzero(trie.leaf_item >= 0)
        n_leaf = np.bincount(trie.parent[leaves], minlength=trie.num_nodes).astype(np.int64)
        got = (n_kids, n_leaf)
        _KINDS[trie] = got
    return got


def needed_width(trie: Trie, node: int, k: int, num_beams: int) -> int:
    """How many best live children of ``node`` the search needs (see the module docstring)."""
    n_kids, n_leaf = _kinds(trie)
    kids, leaves = int(n_kids[node]), int(n_leaf[node])
    if leaves == kids:
        w = k
    elif leaves == 0:
        w = num_beams
    else:
        w = num_beams + k - 1
    return min(w, kids)


def max_width(trie: Trie, k: int, num_beams: int) -> int:
    """The largest :func:`needed_width` over the trie's inner nodes (what an engine must be able to return)."""
    n_kids, n_leaf = _kinds(trie)
    inner = n_kids > 0
    w = np.where(n_leaf == n_kids, k, np.where(n_leaf == 0, num_beams, num_beams + k - 1))
    return int(np.minimum(w, n_kids)[inner].max())


def node_depth(trie: Trie, node: int) -> int:
    """Depth of ``node`` (root 0)."""
    return int(np.searchsorted(trie.level_offsets, node, side="right")) - 1


# --------------------------------------------------------------------------- exclusions
class Exclusion:
    """Items a request may not produce, as the trie nodes they block: ``nodes`` (sorted) and ``counts``
    (how many excluded items lie below each). A child is *live* while it still has an item below it that is
    not excluded. Same meaning as :meth:`Trie.exclusion` / :meth:`Trie.allowed_mask_excluding`, computed
    with array operations, so a node with a million children costs one slice, not a Python loop.
    """

    __slots__ = ("nodes", "counts")

    def __init__(self, nodes: np.ndarray, counts: np.ndarray):
        self.nodes, self.counts = nodes, counts

    @classmethod
    def from_items(cls, trie: Trie, items: Iterable[int] | None) -> Exclusion:
        rows = np.unique(np.fromiter((int(x) for x in (() if items is None else items)), dtype=np.int64))
        if len(rows) == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))
        if rows[0] < 0 or rows[-1] >= trie.num_items:
            raise IndexError(f"item rows must lie in [0, {trie.num_items})")
        node = trie.item_leaf[rows].astype(np.int64)
        path = []
        while len(node):
            path.append(node)
            node = trie.parent[node].astype(np.int64)
            node = node[node > 0]
        nodes, counts = np.unique(np.concatenate(path), return_counts=True)
        return cls(nodes, counts.astype(np.int64))

    def __len__(self) -> int:
        return len(self.nodes)

    def blocked(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Excluded-item counts for the nodes in ``[lo, hi)`` that have any: ``(nodes, counts)``."""
        a, b = np.searchsorted(self.nodes, [lo, hi])
        return self.nodes[a:b], self.counts[a:b]

    def live_children(self, trie: Trie, node: int) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, child_nodes)`` after ``node`` that still lead to an item not excluded (token order)."""
        lo, hi = int(trie.first_child[node]), int(trie.first_child[node + 1])
        kids = np.arange(lo, hi)
        if len(self.nodes):
            bn, bc = self.blocked(lo, hi)
            if len(bn):
                dead = bn[trie.count[bn] <= bc]
                if len(dead):
                    keep = np.ones(hi - lo, dtype=bool)
                    keep[dead - lo] = False
                    kids = kids[keep]
        return trie.token[kids], kids

    def is_live(self, trie: Trie, nodes: np.ndarray) -> np.ndarray:
        """For each node: does an item not excluded lie below it?"""
        nodes = np.asarray(nodes, dtype=np.int64)
        live = np.ones(len(nodes), dtype=bool)
        if len(self.nodes) and len(nodes):
            j = np.searchsorted(self.nodes, nodes)
            j = np.minimum(j, len(self.nodes) - 1)
            hit = self.nodes[j] == nodes
            live[hit] = trie.count[nodes[hit]] > self.counts[j[hit]]
        return live


def children_by_token(trie: Trie, node: int, tokens: np.ndarray) -> np.ndarray:
    """The child of ``node`` reached by each token, or -1 where the token is not allowed there."""
    lo, hi = int(trie.first_child[node]), int(trie.first_child[node + 1])
    tokens = np.asarray(tokens, dtype=np.int64)
    if hi == lo or len(tokens) == 0:
        return np.full(len(tokens), -1, dtype=np.int64)
    kids = trie.token[lo:hi]
    j = np.minimum(np.searchsorted(kids, tokens), hi - lo - 1)
    return np.where(kids[j] == tokens, lo + j, -1).astype(np.int64)
