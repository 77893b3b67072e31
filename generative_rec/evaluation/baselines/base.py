"""The one interface every baseline has, and the registry it is listed in.

A baseline is a dataclass that inherits its hyper-parameters from an *options* dataclass (defaults and
``metadata={"help": ...}``; docs/options.md lists them all), registered together:
``@register("name", NameOptions)``. :func:`make` checks its keyword arguments against that class with the
strict rules of the run config (unknown key or wrong type: :class:`~generative_rec.errors.ConfigError`);
fields of the model that are not options (e.g. ``item_embeddings``, an array given at run time) are passed
through as they are. The model class has

- ``fit(data, valid=None, seed=0) -> self``: train on ``data.train_sequences()`` only. ``valid`` is a
  callable ``score_fn -> float`` (higher is better) used for early stopping; ``None`` means NDCG@10 on the
  validation split (:func:`~generative_rec.evaluation.ranking.ndcg_validator`).
- ``score(users, histories) -> float array [B, num_items]``: a score for every catalogue item. Models
  that use the history (item-kNN, SASRec, content-kNN) read it from ``histories``; the ranker masks it.
- ``grid``: a small hyper-parameter grid searched by :func:`~generative_rec.evaluation.baselines.tuning.tune`.
- ``fit_info``: what the fit did (seed, seconds, epochs, best validation score), for the record.

Register a new one with ``@register("name", NameOptions)`` above the dataclass and import its module in
``baselines/__init__.py``; docs/options.md shows a complete minimal example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.errors import ConfigError
from generative_rec.evaluation.ranking import ScoreFn
from generative_rec.options import NoOptions, from_dict, values

Validator = Callable[[ScoreFn], float]


class Recommender(Protocol):
    name: ClassVar[str]
    grid: ClassVar[dict[str, list[Any]]]
    fit_info: dict[str, Any]

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> Recommender: ...

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray: ...


BASELINES: dict[str, type] = {}
BASELINE_OPTIONS: dict[str, type] = {}  # name -> its hyper-parameter (options) dataclass

T = TypeVar("T", bound=type)


def register(name: str, options: type = NoOptions) -> Callable[[T], T]:
    """Class decorator: list a baseline under ``name`` in :data:`BASELINES`, with hyper-parameters
    ``options`` (a dataclass the model class inherits from; :class:`NoOptions` for none)."""

    def add(cls: T) -> T:
        if name in BASELINES:
            raise ValueError(f"baseline {name!r} is already registered")
        if not dataclasses.is_dataclass(options) or not (options is NoOptions or issubclass(cls, options)):
            raise TypeError(f"baseline {name!r}: {cls.__name__} must be a dataclass inheriting {options.__name__}")
        cls.name = name
        BASELINES[name] = cls
        BASELINE_OPTIONS[name] = options
        return cls

    return add


def _known(name: str) -> None:
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r} (known: {', '.join(sorted(BASELINES))})")


def runtime_inputs(name: str) -> list[str]:
    """Init fields of baseline ``name`` that are not hyper-parameters (arrays given at run time)."""
    _known(name)
    option_names = {f.name for f in dataclasses.fields(BASELINE_OPTIONS[name])}
    return [f.name for f in dataclasses.fields(BASELINES[name]) if f.init and f.name not in option_names]


def baseline_options(name: str, params: dict[str, Any] | None) -> Any:
    """``params`` as baseline ``name``'s typed options (defaults for missing keys). Unknown key or wrong
    type: ConfigError naming it and the known hyper-parameters."""
    _known(name)
    cls = BASELINE_OPTIONS[name]
    if cls is NoOptions and params:
        raise ConfigError(f"baseline {name} takes no hyper-parameters, got {sorted(params, key=str)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params or {}) - known, key=str)
    if unknown:
        inputs = runtime_inputs(name)
        raise ConfigError(f"baseline {name}: unknown key(s) {unknown}; known: {sorted(known)}"
                          + (f" (run-time inputs: {inputs})" if inputs else ""))
    return from_dict(cls, params, where=f"baseline {name}")


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ConfigError unless ``params`` (hyper-parameters and run-time inputs) fit baseline ``name``."""
    inputs = set(runtime_inputs(name))
    baseline_options(name, {k: v for k, v in params.items() if k not in inputs})


def make(name: str, **params: Any) -> Recommender:
    """Build a registered baseline with the given hyper-parameters (checked: :func:`baseline_options`)
    and run-time inputs (e.g. ``item_embeddings``)."""
    _known(name)
    inputs = {k: params.pop(k) for k in runtime_inputs(name) if k in params}
    options = baseline_options(name, params)
    return BASELINES[name](**values(options), **inputs)
