"""The one interface every baseline has, and the registry it is listed in.

A baseline is a dataclass whose fields are its hyper-parameters (the signature *is* the config) with

- ``fit(data, valid=None, seed=0) -> self``: train on ``data.train_sequences()`` only. ``valid`` is a
  callable ``score_fn -> float`` (higher is better) used for early stopping; ``None`` means NDCG@10 on the
  validation split (:func:`~generative_rec.evaluation.ranking.ndcg_validator`).
- ``score(users, histories) -> float array [B, num_items]``: a score for every catalogue item. Models
  that use the history (item-kNN, SASRec, content-kNN) read it from ``histories``; the ranker masks it.
- ``grid``: a small hyper-parameter grid searched by :func:`~generative_rec.evaluation.baselines.tuning.tune`.
- ``fit_info``: what the fit did (seed, seconds, epochs, best validation score), for the record.

Register a new one with ``@register("name")`` above the dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.ranking import ScoreFn

Validator = Callable[[ScoreFn], float]


class Recommender(Protocol):
    name: ClassVar[str]
    grid: ClassVar[dict[str, list[Any]]]
    fit_info: dict[str, Any]

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> Recommender: ...

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray: ...


BASELINES: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: list a baseline under ``name`` in :data:`BASELINES`."""

    def add(cls: T) -> T:
        if name in BASELINES:
            raise ValueError(f"baseline {name!r} is already registered")
        cls.name = name
        BASELINES[name] = cls
        return cls

    return add


def make(name: str, **params: Any) -> Recommender:
    """Build a registered baseline with the given hyper-parameters."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r} (known: {', '.join(sorted(BASELINES))})")
    return BASELINES[name](**params)
