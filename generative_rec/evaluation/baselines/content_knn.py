"""Content-based kNN: items are vectors from a given embedding matrix (e.g. the LLM's mean-pooled hidden
states); a user is the recency-weighted mean of their (L2-normalised) history vectors; an item's score is
its cosine similarity to that profile.

Nothing is learned from interactions, so items never seen in training (cold-start items) are scored like
any other. ``fit`` only checks and normalises the matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register


def normalise_rows(x: np.ndarray, center: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); with ``center``, the column mean is removed first
    (mean-pooled LLM states share a large common direction that makes every cosine close to 1)."""
    x = np.asarray(x, dtype=np.float32)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


@dataclass
class ContentKNNOptions:
    decay: float = field(default=0.9, metadata={
        "help": "weight of a history item = decay ** (number of later history items)"})
    last_n: int | None = field(default=None, metadata={"help": "use only the last n history items (null: all)"})
    center: bool = field(default=True, metadata={"help": "remove the embeddings' mean before normalising"})


@register("content_knn", ContentKNNOptions)
@dataclass
class ContentKNN(ContentKNNOptions):
    item_embeddings: np.ndarray | None = field(default=None, repr=False)  # run-time input, not an option

    grid: ClassVar[dict[str, list[Any]]] = {"decay": [1.0, 0.9, 0.7, 0.5], "last_n": [None, 20]}
    unit: np.ndarray | None = field(default=None, init=False, repr=False)
    fit_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> ContentKNN:
        t0 = time.time()
        if self.item_embeddings is None:
            raise ValueError("content_knn needs item_embeddings [num_items, d]")
        e = np.asarray(self.item_embeddings)
        if e.ndim != 2 or e.shape[0] != data.num_items:
            raise ValueError(f"item_embeddings has shape {e.shape}, expected ({data.num_items}, d)")
        self.unit = normalise_rows(e, self.center)
        self.fit_info = {"seed": seed, "fit_s": time.time() - t0}
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        assert self.unit is not None, "fit first"
        profiles = np.zeros((len(histories), self.unit.shape[1]), dtype=np.float32)
        for r, h in enumerate(histories):
            h = np.asarray(h if self.last_n is None else h[-self.last_n:], dtype=np.int64)
            if len(h):
                w = self.decay ** np.arange(len(h) - 1, -1, -1, dtype=np.float32)
                profiles[r] = w @ self.unit[h]
        return normalise_rows(profiles) @ self.unit.T
