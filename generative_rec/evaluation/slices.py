"""Metrics by kind of user: new-item vs known-item targets, and history length (the cold-start view).

A *new item* is one with no interaction in any training part (:attr:`RecData.new_items`): under the
cold-start protocol (``genrec prepare --new-items F``) every held-out item is one, and no ID-only model
(Pop, ItemKNN, BPR, SASRec, LightGCN) can score it above an item it has seen. Slices are computed from the
per-user values of the standard full-catalogue evaluation, so every model is sliced the same way.

Two views are reported for the users whose target is a new item:

- **full ranking** (``new target`` slice): the same lists as every other user, over the whole catalogue;
- **among new items only** (:func:`rank_among_new`): the catalogue restricted to the new items (every known
  item masked), as cold-start papers report it: how well a model orders the items it has never seen trained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from generative_rec.data.dataset import RecData

# History length buckets (items the model may see for the split's target), inclusive; None = no upper end.
HISTORY_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 3), (4, 10), (11, 50), (51, None))
SLICE_METRICS = ("HR@10", "NDCG@10", "MRR@20")


def bucket_name(lo: int, hi: int | None) -> str:
    return f"history {lo}-{hi}" if hi is not None else f"history >{lo - 1}"


def slice_masks(data: RecData, users: np.ndarray, split: str = "test") -> dict[str, np.ndarray]:
    """Boolean masks over ``users`` (in their order): ``new target``, ``known target`` and one per history
    length bucket. History length = items the model may see (:meth:`RecData.history`)."""
    users = np.asarray(users, dtype=np.int64)
    examples = data.examples(split, users)
    targets = np.fromiter((e.target for e in examples), dtype=np.int64, count=len(examples))
    lengths = np.fromiter((len(e.history) for e in examples), dtype=np.int64, count=len(examples))
    new = data.new_items[targets] if len(targets) else np.zeros(0, dtype=bool)
    masks = {"new target": new, "known target": ~new}
    for lo, hi in HISTORY_BUCKETS:
        masks[bucket_name(lo, hi)] = (lengths >= lo) & (lengths <= (hi if hi is not None else np.iinfo(np.int64).max))
    return masks


def slice_means(per_user: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                metrics: Sequence[str] = SLICE_METRICS) -> dict[str, dict[str, float | int | None]]:
    """``{slice: {"users": n, metric: mean over the slice's users}}``; a metric is None on an empty slice."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name, m in masks.items():
        n = int(m.sum())
        row: dict[str, float | int | None] = {"users": n}
        for k in metrics:
            if k in per_user:
                row[k] = float(np.asarray(per_user[k])[m].mean()) if n else None
        out[name] = row
    return out


def new_target_users(data: RecData, users: np.ndarray, split: str = "test") -> np.ndarray:
    """The users (of ``users``) whose ``split`` target is a new item."""
    users = np.asarray(users, dtype=np.int64)
    return users[slice_masks(data, users, split)["new target"]] if len(users) else users


def among_new(score_fn: Callable[[np.ndarray, list[np.ndarray]], np.ndarray],
              new_items: np.ndarray) -> Callable[[np.ndarray, list[np.ndarray]], np.ndarray]:
    """``score_fn`` with every known item scored ``-inf``: a ranking over the new items only."""
    known = ~np.asarray(new_items, dtype=bool)

    def scored(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        s = np.array(score_fn(users, histories), dtype=np.float64)
        s[:, known] = -np.inf
        return s

    return scored


def rank_among_new(score_fn, data: RecData, users: np.ndarray, split: str = "test",
                   ks: Sequence[int] = (1, 5, 10, 20)) -> dict:
    """Accuracy of ``score_fn`` among the new items only, for the users of ``users`` whose target is new.
    Returns ``{"users": n, "candidates": number of new items, metric: mean}`` (``users`` 0: no metric)."""
    from generative_rec.evaluation.ranking import evaluate_model

    sel = new_target_users(data, users, split)
    out: dict = {"users": int(len(sel)), "candidates": int(data.new_items.sum())}
    if len(sel):
        ev = evaluate_model(among_new(score_fn, data.new_items), data, split, sel, tuple(ks), beyond_k=None)
        out.update(ev.means)
    return out


def new_only_exclusions(data: RecData, histories: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per history: the history items plus every known item (what a constrained decoder must exclude to
    rank the new items only)."""
    known = np.flatnonzero(~data.new_items)
    return [np.union1d(np.asarray(h, dtype=np.int64), known) for h in histories]

