"""Full-catalogue ranking under the leave-one-out protocol, and a one-call model evaluation.

A model is a *score function* ``score_fn(users, histories) -> scores [B, num_items]`` (``users``: int
array ``[B]``, ``histories``: the list of what each user may see, from :meth:`RecData.history`). Ranking
is over ALL items (no sampled negatives); the user's history items are masked to ``-inf`` first. Ties are
broken by item index (the lower index ranks first), so the same scores always give the same lists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.metrics import KS, MetricResult, accuracy, beyond_accuracy

log = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Ranking:
    """Top-k lists ``[U, k]`` (``-1`` where fewer than k items are rankable), targets ``[U]``, users ``[U]``."""

    topk: np.ndarray
    targets: np.ndarray
    users: np.ndarray


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores per row, best first; ties go to the lower index.

    Items scored ``-inf`` are not rankable (masked): they become ``-1`` padding at the end of the list.
    A full stable sort, ``O(N log N)`` per row, so that ties are deterministic.
    """
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    masked = np.take_along_axis(scores, order, axis=1) == -np.inf
    return np.where(masked, -1, order)


def rank_full(score_fn: ScoreFn, data: RecData, split: str, users: np.ndarray | None = None, k: int = 20,
              mask_history: bool = True, batch_size: int = 256) -> Ranking:
    """Rank the whole catalogue for each user's ``split`` ('valid' or 'test') example.

    The history given to ``score_fn`` (and masked) is :meth:`RecData.history`: the training part for
    'valid', the training part plus the validation item for 'test'. A target that also occurs in the
    history (only possible in a data set prepared without de-duplication) is masked too and cannot be hit.
    """
    users = np.arange(data.num_users) if users is None else np.asarray(users, dtype=np.int64)
    examples = data.examples(split, users)
    targets = np.fromiter((e.target for e in examples), dtype=np.int64, count=len(examples))
    out = np.empty((len(users), min(k, data.num_items)), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        batch = examples[start:start + batch_size]
        hist = [e.history for e in batch]
        scores = np.array(score_fn(users[start:start + batch_size], hist), dtype=np.float64)
        if scores.shape != (len(batch), data.num_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected ({len(batch)}, {data.num_items})")
        if mask_history:
            rows = np.repeat(np.arange(len(batch)), [len(h) for h in hist])
            scores[rows, np.concatenate(hist)] = -np.inf
        out[start:start + len(batch)] = topk_indices(scores, k)
    return Ranking(out, targets, users)


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_model` measured: means, per-user values and the ranking itself."""

    means: dict[str, float]
    per_user: dict[str, np.ndarray]
    ranking: Ranking


def evaluate_model(score_fn: ScoreFn, data: RecData, split: str = "test", users: np.ndarray | None = None,
                   ks: tuple[int, ...] = KS, mask_history: bool = True, batch_size: int = 256,
                   beyond_k: int | None = 10) -> Evaluation:
    """Rank, then compute HR/NDCG/MRR at ``ks`` and (at ``beyond_k``) coverage, novelty, popularity bias
    and, when the data has item attributes, attribute ILD (Jaccard)."""
    ranking = rank_full(score_fn, data, split, users, max(ks), mask_history, batch_size)
    acc = accuracy(ranking.topk, ranking.targets, ks)
    means, per_user = dict(acc.means), dict(acc.per_user)
    if beyond_k is not None:
        attrs = data.attributes if any(data.attributes) else None
        extra: MetricResult = beyond_accuracy(ranking.topk, data.train_counts, data.num_users, beyond_k, attrs)
        means.update(extra.means)
        per_user.update(extra.per_user)
    return Evaluation(means, per_user, ranking)


def ndcg_validator(data: RecData, users: np.ndarray | None = None, k: int = 10,
                   batch_size: int = 256) -> Callable[[ScoreFn], float]:
    """A callable ``score_fn -> mean NDCG@k on the validation split`` (for early stopping and tuning)."""

    def validate(score_fn: ScoreFn) -> float:
        r = rank_full(score_fn, data, "valid", users, k, True, batch_size)
        return accuracy(r.topk, r.targets, (k,)).means[f"NDCG@{k}"]

    return validate
