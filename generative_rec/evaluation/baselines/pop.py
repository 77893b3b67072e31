"""Popularity: every user gets the items ranked by their number of training interactions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register


@register("pop")  # no hyper-parameters (options: NoOptions)
@dataclass
class Pop:
    """Training popularity (``data.train_counts``); no hyper-parameters."""

    grid: ClassVar[dict[str, list[Any]]] = {}
    counts: np.ndarray | None = field(default=None, init=False, repr=False)
    fit_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> Pop:
        t0 = time.time()
        self.counts = data.train_counts.astype(np.float32)
        self.fit_info = {"seed": seed, "fit_s": time.time() - t0}
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        assert self.counts is not None, "fit first"
        return np.repeat(self.counts[None], len(users), axis=0)
