"""Grid search on the validation split: fit every configuration, keep the best by validation NDCG@10."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import BASELINES, Recommender, Validator, check_params, make
from generative_rec.evaluation.ranking import ndcg_validator

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """The best fitted model, its hyper-parameters and validation score, and every trial for the record."""

    name: str
    model: Recommender
    params: dict[str, Any]
    valid_score: float
    seed: int
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid (``{}`` -> one empty configuration)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(name: str, data: RecData, grid: dict[str, list[Any]] | None = None, fixed: dict[str, Any] | None = None,
         seed: int = 0, valid: Validator | None = None) -> TuneResult:
    """Fit ``name`` for each point of ``grid`` (default: the model's own ``grid``) plus ``fixed``
    arguments, score each on the validation split with ``valid`` (default NDCG@10 over all users, which is
    also what early stopping watches) and return the best. Ties keep the earlier configuration. Every
    point is checked against the model's options class first (unknown key or wrong type: ConfigError)."""
    t0 = time.time()
    grid = BASELINES[name].grid if grid is None else grid
    points = grid_points(grid)
    for params in points:  # an unknown or mistyped key fails here, before any fit
        check_params(name, {**(fixed or {}), **params})
    valid = valid if valid is not None else ndcg_validator(data)
    best: TuneResult | None = None
    trials = []
    for params in points:
        model = make(name, **(fixed or {}), **params).fit(data, valid, seed)
        score = float(valid(model.score))
        trials.append({"params": params, "valid": score, "fit_s": model.fit_info.get("fit_s"),
                       "best_epoch": model.fit_info.get("best_epoch")})
        log.info("tune %s %s: valid %.4f (%.1fs)", name, params, score, model.fit_info.get("fit_s", 0.0))
        if best is None or score > best.valid_score:
            best = TuneResult(name, model, params, score, seed)
    assert best is not None
    best.trials, best.seconds = trials, time.time() - t0
    return best
