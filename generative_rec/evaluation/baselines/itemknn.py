"""Item-based collaborative filtering: cosine similarity with shrinkage, top-k neighbourhoods.

``sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|) * sqrt(|U_j|) + shrink)`` over the training users of each item;
each item keeps its ``k`` most similar items. A user's score for item ``j`` is the sum over the history
items ``h`` of ``w_h * sim(h, j)``, with ``w_h = decay ** (number of later history items)``: ``decay = 1``
is the classic unweighted item-kNN, ``decay < 1`` favours the neighbours of recent items.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register
from generative_rec.evaluation.baselines.common import interaction_matrix


@dataclass
class ItemKNNOptions:
    # defaults: the best of ``grid`` on ML-100K validation NDCG@10 (decay = 1 is the classic item-kNN)
    k: int = field(default=50, metadata={"help": "neighbours kept per item"})
    shrink: float = field(default=10.0, metadata={"help": "added to the cosine's denominator"})
    decay: float = field(default=0.5, metadata={
        "help": "weight of a history item = decay ** (number of later history items); 1: classic item-kNN"})
    block: int = field(default=1024, metadata={
        "help": "items per block when building the similarity matrix (memory, not results)"})


@register("itemknn", ItemKNNOptions)
@dataclass
class ItemKNN(ItemKNNOptions):
    grid: ClassVar[dict[str, list[Any]]] = {
        "k": [20, 50, 100, 200], "shrink": [0.0, 10.0], "decay": [1.0, 0.9, 0.8, 0.7, 0.5]}
    sim: sp.csr_matrix | None = field(default=None, init=False, repr=False)
    fit_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> ItemKNN:
        t0 = time.time()
        x = interaction_matrix(data).tocsc()  # [users, items]
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        n = data.num_items
        k = min(self.k, n - 1)
        rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
        for start in range(0, n if k > 0 else 0, self.block):
            stop = min(start + self.block, n)
            co = (xt[start:stop] @ x).toarray()  # co-occurrence counts [b, n]
            s = co / (norms[start:stop, None] * norms[None, :] + self.shrink + 1e-12)
            s[np.arange(stop - start), np.arange(start, stop)] = 0.0
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            v = np.take_along_axis(s, top, axis=1)
            keep = v > 0
            rows.append(np.repeat(np.arange(start, stop), k)[keep.ravel()])
            cols.append(top[keep])
            vals.append(v[keep])
        coo = (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols)))
        self.sim = sp.csr_matrix(coo, shape=(n, n))
        self.fit_info = {"seed": seed, "fit_s": time.time() - t0, "nnz": int(self.sim.nnz)}
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        assert self.sim is not None, "fit first"
        n = self.sim.shape[0]
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        cols = np.concatenate([np.zeros(0, np.int64), *histories])
        w = np.concatenate([np.zeros(0), *(self.decay ** np.arange(len(h) - 1, -1, -1.0) for h in histories)])
        h = sp.csr_matrix((w, (rows, cols)), shape=(len(histories), n))
        return np.asarray((h @ self.sim).todense(), dtype=np.float32)
