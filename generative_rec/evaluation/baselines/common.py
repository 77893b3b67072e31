"""Helpers shared by the baselines: training pairs, negative sampling, seeding, early stopping."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.ranking import ScoreFn, ndcg_validator

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return a numpy generator for the same seed."""
    import torch

    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def train_pairs(data: RecData) -> tuple[np.ndarray, np.ndarray]:
    """``(users, items)`` of every training interaction (the train part of each sequence only)."""
    seqs = data.train_sequences()
    users = np.repeat(np.arange(len(seqs), dtype=np.int64), [len(s) for s in seqs])
    items = np.concatenate(seqs).astype(np.int64) if seqs else np.zeros(0, np.int64)
    return users, items


def interaction_matrix(data: RecData) -> sp.csr_matrix:
    """Binary user-item matrix ``[num_users, num_items]`` of the training part."""
    u, i = train_pairs(data)
    m = sp.csr_matrix((np.ones(len(u), dtype=np.float64), (u, i)), shape=(data.num_users, data.num_items))
    m.data[:] = 1.0  # repeated (user, item) pairs count once
    return m


class NegativeSampler:
    """Uniform negatives from the items a user has NOT interacted with in training (rejection sampling)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, num_items: int):
        self.num_items = num_items
        self.keys = np.unique(users * num_items + items)

    def __call__(self, users: np.ndarray, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
        neg = rng.integers(0, self.num_items, size=len(users))
        for _ in range(max_rounds):
            keys = users * self.num_items + neg
            pos = np.searchsorted(self.keys, keys)
            bad = self.keys[np.minimum(pos, len(self.keys) - 1)] == keys
            if not bad.any():
                return neg
            neg[bad] = rng.integers(0, self.num_items, size=int(bad.sum()))
        return neg  # a user who has seen (nearly) every item: keep what we have


def no_validation(score_fn: ScoreFn) -> float:
    """Pass as ``valid`` to train a fixed number of epochs without ever reading a validation target
    (the model then depends on the training part only: collaborative embeddings, distillation teachers)."""
    raise RuntimeError("no_validation is a marker: early_stopping never calls it")


def default_validator(data: RecData, valid: Callable[[ScoreFn], float] | None) -> Callable[[ScoreFn], float]:
    return valid if valid is not None else ndcg_validator(data)


def early_stopping(module: Any, run_epoch: Callable[[int], float], make_scorer: Callable[[], ScoreFn],
                   valid: Callable[[ScoreFn], float], max_epochs: int, eval_every: int, patience: int,
                   name: str) -> dict[str, Any]:
    """Train ``module`` (a torch module) epoch by epoch; keep the weights with the best validation score.

    ``run_epoch(epoch) -> mean loss``; every ``eval_every`` epochs ``valid(make_scorer())`` is computed
    with the module in eval mode; training stops after ``patience`` evaluations without improvement and
    the best weights are restored. With ``valid=no_validation`` every epoch runs and the last weights stay.
    Returns a record of the run.
    """
    import torch

    best, best_state, best_epoch, bad, curve = -math.inf, None, 0, 0, []
    t0 = time.time()
    epoch = 0
    if valid is no_validation:  # fixed epochs; the last weights are kept
        for epoch in range(1, max_epochs + 1):
            module.train()
            loss = run_epoch(epoch)
            curve.append((epoch, round(loss, 5), None))
            if epoch % eval_every == 0 or epoch == max_epochs:
                log.info("%s epoch %d loss %.4f (%.0fs)", name, epoch, loss, time.time() - t0)
        module.eval()
        return {"best_epoch": epoch, "epochs_run": epoch, "valid_best": None, "curve": curve}
    for epoch in range(1, max_epochs + 1):
        module.train()
        loss = run_epoch(epoch)
        if epoch % eval_every and epoch != max_epochs:
            continue
        module.eval()
        with torch.no_grad():
            v = float(valid(make_scorer()))
        curve.append((epoch, round(loss, 5), round(v, 5)))
        log.info("%s epoch %d loss %.4f valid %.4f (%.0fs)", name, epoch, loss, v, time.time() - t0)
        if v > best:
            best, best_epoch, bad = v, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return {"best_epoch": best_epoch, "epochs_run": epoch, "valid_best": best, "curve": curve}
