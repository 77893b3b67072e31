"""Collaborative IDs: recursive spectral clustering of the item co-occurrence graph (training part only).

Items that users interact with close together in time share ID prefixes, so the LLM can first pick a
"neighbourhood" and then an item in it (Hua et al., "How to Index Item IDs for Recommendation Foundation
Models", 2023). Steps:

1. **graph** — ``C[i, j]`` counts how often ``i`` and ``j`` occur within ``window`` positions of each other
   in a user's *training* sequence (``RecData.train_sequences()``; validation/test targets never enter);
2. **affinity** — regularised normalised affinity ``(D + tau)^-1/2 C (D + tau)^-1/2`` with ``tau`` the mean
   degree (keeps rare items from forming their own spectral components);
3. **recursion** — a cluster with more than ``k`` items is split into ``k`` clusters by k-means on its
   row-normalised top-``k`` eigenvectors (Ng–Jordan–Weiss); clusters are numbered by training popularity
   (most interactions first); a cluster of at most ``k`` items is a leaf, its items numbered ``0..`` in
   catalogue order (the disambiguation level);
4. **fixed depth** — paths are padded to the deepest path by inserting code 0 *before* the last (item)
   code, so every ID has the same number of tokens: prefix-free by construction.

Items with no co-occurrence in training (never seen, or seen only alone) go to the reserved top cluster
``k`` and are numbered by catalogue order only: their IDs carry no information from validation/test data
(nor from where a test-only item sits in anyone's sequence).

Tokens: one new token per (level, code), ``<c1_5><c2_17><c3_2>``, rather than ordinary digits: an ID is
one decoding step per level (digits would need two per level at k = 32), and each level-1 token's
embedding starts from the mean of its cluster's titles (``token_items``), giving the model a
meaningful starting point; digits would share one embedding for "5" across unrelated clusters and levels.
The cost is ``levels * (k + 1)`` new rows at most (about a hundred for MovieLens-100K).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh
from scipy.sparse.linalg import eigsh

from generative_rec.indexing.base import IndexConfig, ItemIndex, register
from generative_rec.indexing.kmeans import kmeans

DENSE_LIMIT = 2000  # below this many items per cluster, use a dense eigen-solver
N_INIT = 4  # k-means restarts on the spectral embedding (the least-inertia run is kept)


def cooccurrence(sequences: list[np.ndarray], num_items: int, window: int) -> sp.csr_matrix:
    """Symmetric item x item counts of pairs at most ``window`` positions apart (no self pairs)."""
    rows, cols = [], []
    for s in sequences:
        s = np.asarray(s, dtype=np.int64)
        for off in range(1, min(window, len(s) - 1) + 1):
            rows.append(s[:-off])
            cols.append(s[off:])
    if not rows:
        return sp.csr_matrix((num_items, num_items))
    r, c = np.concatenate(rows), np.concatenate(cols)
    keep = r != c
    r, c = r[keep], c[keep]
    m = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(num_items, num_items)).tocsr()
    return (m + m.T).tocsr()


def spectral_labels(aff: sp.csr_matrix, k: int, rng: np.random.Generator) -> np.ndarray:
    """Split the graph ``aff`` (n x n, n > k) into at most ``k`` clusters."""
    n = aff.shape[0]
    deg = np.asarray(aff.sum(1)).ravel()
    tau = deg.mean() if deg.mean() > 0 else 1.0
    inv = 1.0 / np.sqrt(deg + tau)
    norm = sp.diags(inv) @ aff @ sp.diags(inv)
    if n <= DENSE_LIMIT:
        _, vecs = eigh(norm.toarray(), subset_by_index=[n - k, n - 1])
    else:
        v0 = np.full(n, 1.0 / np.sqrt(n))
        _, vecs = eigsh(norm.tocsc(), k=k, which="LA", v0=v0)
    emb = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    _, labels = kmeans(emb, k, rng, n_init=N_INIT)
    return labels


def cluster_paths(items: np.ndarray, aff: sp.csr_matrix, popularity: np.ndarray, k: int,
                  rng: np.random.Generator, prefix: tuple[int, ...], out: dict[int, tuple[int, ...]]) -> None:
    """Assign ``out[item] = prefix + codes`` for ``items`` (sorted catalogue indices) recursively."""
    if len(items) <= k:
        for pos, i in enumerate(items):
            out[int(i)] = (*prefix, pos)
        return
    labels = spectral_labels(aff[items][:, items], k, rng)
    groups = [items[labels == j] for j in np.unique(labels)]
    if len(groups) == 1:  # no structure left (e.g. identical rows): split in catalogue order
        groups = [g for g in np.array_split(items, k) if len(g)]
    groups.sort(key=lambda g: (-int(popularity[g].sum()), int(g[0])))
    for code, g in enumerate(groups):
        cluster_paths(g, aff, popularity, k, rng, (*prefix, code), out)


def chunk_paths(items: np.ndarray, k: int, prefix: tuple[int, ...], out: dict[int, tuple[int, ...]]) -> None:
    """Number ``items`` in catalogue order as a balanced k-ary tree under ``prefix`` (no data used)."""
    if len(items) <= k:
        for pos, i in enumerate(items):
            out[int(i)] = (*prefix, pos)
        return
    size = int(np.ceil(len(items) / k))
    for code, start in enumerate(range(0, len(items), size)):
        chunk_paths(items[start:start + size], k, (*prefix, code), out)


def pad_paths(paths: dict[int, tuple[int, ...]], depth: int) -> dict[int, tuple[int, ...]]:
    """Insert code 0 before the last code until every path has ``depth`` codes."""
    return {i: (*p[:-1], *([0] * (depth - len(p))), p[-1]) for i, p in paths.items()}


@dataclass
class CollaborativeOptions:
    k: int = field(default=32, metadata={"help": "clusters per level (a cluster of at most k items is a leaf)"})
    window: int = field(default=10, metadata={
        "help": "two items co-occur when at most this many positions apart in a training sequence"})


@register("collaborative", CollaborativeOptions)
def build(data, cfg: IndexConfig, options: CollaborativeOptions) -> ItemIndex:
    k = options.k
    window = options.window
    if k < 2:
        raise ValueError("collaborative IDs need k >= 2")
    n = data.num_items
    train = data.train_sequences()
    co = cooccurrence(train, n, window)
    popularity = np.zeros(n, dtype=np.int64)
    for s in train:
        np.add.at(popularity, s, 1)
    connected = np.asarray((co != 0).sum(1)).ravel() > 0
    warm, cold = np.flatnonzero(connected), np.flatnonzero(~connected)
    rng = np.random.default_rng(cfg.seed)
    paths: dict[int, tuple[int, ...]] = {}
    if len(warm):
        cluster_paths(warm, co, popularity, k, rng, (), paths)
    if len(cold):
        chunk_paths(cold, k, (k,), paths)
    depth = max(len(p) for p in paths.values())
    paths = pad_paths(paths, depth)
    ids, token_items = [], {}
    for i in range(n):
        toks = [f"<c{lvl + 1}_{code}>" for lvl, code in enumerate(paths[i])]
        ids.append("".join(toks))
        for lvl, t in enumerate(toks):
            # the last level only numbers items inside a leaf: its tokens get the mean embedding
            token_items.setdefault(t, []).extend([i] if lvl < depth - 1 else [])
    new_tokens = sorted(token_items, key=lambda t: (int(t[2:t.index("_")]), int(t[t.index("_") + 1:-1])))
    return ItemIndex(
        scheme="collaborative", item_ids=list(data.item_ids), id_texts=ids, new_tokens=new_tokens,
        token_items={t: token_items[t] for t in new_tokens},
        meta={"k": k, "window": window, "depth": depth, "cold_items": int(len(cold)), "cold_code": k,
              "top_clusters": len({p[0] for p in paths.values()}),
              "codes": [list(paths[i]) for i in range(n)]},
    )
