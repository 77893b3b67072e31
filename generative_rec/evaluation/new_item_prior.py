"""A new-item prior for the LLM: its own ranking of never-trained items, merged in with one log-prior.

An LLM fine-tuned on interactions learns that items absent from every training part never come next, so its
full-catalogue top-K almost never holds a new item, even when it orders the new items well among themselves
(``bench/results/cold_start.md``: the semantic-ID LLM orders ML-100K's new items better than content kNN, yet
puts ~0.1 % of them in its top-10). This module keeps the model and changes only how the two groups meet:

1. the usual trie-constrained top-K (history excluded): the model's ranking, in practice of known items;
2. the same search restricted to the new items (every known item excluded as well): the model's top-K of
   new items, with their sequence log-probabilities;
3. the merged list: every new item's score plus ``beta``, the best K of both lists.

``beta`` is a log-prior for "the next item is a new one", chosen on *validation* users over a grid; no test
target is read. ``beta = 0`` is the plain model on the known side plus its new items at their own scores. Two
rules choose it (:func:`tune_beta`):

- ``max_known_loss=None``: the best mean NDCG@10 over all validation users. New-item targets are a small share
  of users, so this rule rarely trades any known-item accuracy for them and often picks 0;
- ``max_known_loss=0.05``: the best NDCG@10 on validation users whose target is a *new* item, among the betas
  that keep NDCG@10 on known-item targets within 5 % of beta 0's: how much known-item accuracy a catalogue
  owner gives up to surface new items, stated up front (the exploration budget).

Costs one more constrained search per user (for one-token IDs, a second top-K over the same distribution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from generative_rec.data import RecData
from generative_rec.evaluation.metrics import accuracy

BETA_GRID = tuple(float(b) / 4 for b in range(0, 33)) + tuple(float(b) for b in range(9, 17))  # nats


@dataclass(frozen=True)
class TwoLists:
    """Per user: the plain top-K (``items``/``scores``) and the new-items-only top-K (``new_items``/``new_scores``);
    ``-1`` / ``-inf`` padded."""

    items: np.ndarray
    scores: np.ndarray
    new_items: np.ndarray
    new_scores: np.ndarray
    targets: np.ndarray


def merge(lists: TwoLists, is_new: np.ndarray, beta: float, k: int) -> np.ndarray:
    """Top-``k`` ``[U, k]`` of both lists with ``beta`` added to every new item's score (each item once)."""
    out = np.full((len(lists.items), k), -1, dtype=np.int64)
    for u in range(len(lists.items)):
        best: dict[int, float] = {}
        for items, scores in ((lists.items[u], lists.scores[u]), (lists.new_items[u], lists.new_scores[u])):
            for i, s in zip(items, scores, strict=True):
                if i < 0 or not np.isfinite(s):
                    continue
                v = float(s) + (beta if is_new[i] else 0.0)
                if v > best.get(int(i), -np.inf):
                    best[int(i)] = v
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        out[u, : len(ranked)] = [i for i, _ in ranked]
    return out


def two_lists(bundle, model, data: RecData, split: str, users: np.ndarray, k: int, cfg,
              plain: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True) -> TwoLists:
    """Both searches for ``users`` on ``split`` (``plain``: the plain top-K and scores when already decoded)."""
    import torch

    from generative_rec.decoding.hf import rank_histories
    from generative_rec.evaluation.slices import new_only_exclusions

    examples = data.examples(split, users)
    histories = [e.history for e in examples]
    common = dict(max_history=bundle.manifest.get("max_history"), num_beams=cfg.num_beams,
                  batch_size=cfg.batch_size, pad_id=bundle.tokenizer.pad_token_id, progress=progress)
    tpl = bundle.template(cfg.template)
    with torch.inference_mode():
        if plain is None:
            plain = rank_histories(model, bundle.renderer, bundle.trie, histories, tpl, k, exclude=histories, **common)
        new = rank_histories(model, bundle.renderer, bundle.trie, histories, tpl, k,
                             exclude=new_only_exclusions(data, histories), **common)
    targets = np.asarray([e.target for e in examples], dtype=np.int64)
    return TwoLists(plain[0][:, :k], plain[1][:, :k], new[0], new[1], targets)


def tune_beta(lists: TwoLists, is_new: np.ndarray, k: int, grid: Sequence[float] = BETA_GRID,
              metric: str = "NDCG@10", max_known_loss: float | None = None) -> tuple[float, dict[float, dict]]:
    """The ``beta`` of ``grid`` chosen on ``lists`` (validation users) by one of the module's two rules; ties: the
    smaller beta. Returns it and, per beta, the mean ``metric`` over all users, new-item and known-item targets."""
    if max_known_loss is not None and not 0.0 <= max_known_loss < 1.0:
        raise ValueError(f"max_known_loss must be in [0, 1), not {max_known_loss}")
    cut = int(metric.split("@")[1])
    new_target = np.asarray(is_new)[lists.targets]
    curve = {}
    for b in grid:
        per_user = np.asarray(accuracy(merge(lists, is_new, b, k), lists.targets, (cut,)).per_user[metric])
        curve[b] = {"all": float(per_user.mean()),
                    "new target": float(per_user[new_target].mean()) if new_target.any() else 0.0,
                    "known target": float(per_user[~new_target].mean()) if (~new_target).any() else 0.0}
    if max_known_loss is None:
        best = max(grid, key=lambda b: (curve[b]["all"], -b))
    else:
        floor = (1.0 - max_known_loss) * curve[min(grid)]["known target"]
        allowed = [b for b in grid if curve[b]["known target"] >= floor - 1e-12]
        best = max(allowed, key=lambda b: (curve[b]["new target"], -b))
    return best, curve
