"""BPR-MF: matrix factorisation trained with the Bayesian personalised ranking loss (torch).

``score(u, i) = p_u · q_i``; each training interaction ``(u, i)`` is paired with a negative ``j`` drawn
uniformly from the items ``u`` did not interact with in training, and the loss is
``-log σ(p_u·q_i - p_u·q_j) + reg * (|p_u|² + |q_i|² + |q_j|²)``. Early stopping on validation NDCG@10.
:func:`fit_mf` is shared with :mod:`~generative_rec.evaluation.baselines.mf_llm_init`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register
from generative_rec.evaluation.baselines.common import (
    NegativeSampler,
    default_validator,
    early_stopping,
    seed_everything,
    train_pairs,
)


def _mf_net(num_users: int, num_items: int, dim: int, init_std: float, item_init: np.ndarray | None):
    import torch

    net = torch.nn.ModuleDict({"user": torch.nn.Embedding(num_users, dim), "item": torch.nn.Embedding(num_items, dim)})
    torch.nn.init.normal_(net["user"].weight, std=init_std)
    if item_init is None:
        torch.nn.init.normal_(net["item"].weight, std=init_std)
    else:
        if item_init.shape != (num_items, dim):
            raise ValueError(f"item_init has shape {item_init.shape}, expected ({num_items}, {dim})")
        net["item"].weight.data.copy_(torch.as_tensor(item_init, dtype=torch.float32))
    return net


def fit_mf(hp: Any, data: RecData, valid: Validator | None, seed: int, item_init: np.ndarray | None = None):
    """Train a BPR-MF with the hyper-parameters of ``hp`` (dim, lr, reg, batch_size, epochs, eval_every,
    patience, init_std). Returns ``(net, record)``; ``net`` holds the best-validation weights."""
    import torch

    t0 = time.time()
    rng = seed_everything(seed)
    users, items = train_pairs(data)
    sampler = NegativeSampler(users, items, data.num_items)
    net = _mf_net(data.num_users, data.num_items, hp.dim, hp.init_std, item_init)
    opt = torch.optim.Adam(net.parameters(), lr=hp.lr)

    def run_epoch(epoch: int) -> float:
        order = rng.permutation(len(users))
        total = 0.0
        for start in range(0, len(order), hp.batch_size):
            b = order[start:start + hp.batch_size]
            u, i = torch.from_numpy(users[b]), torch.from_numpy(items[b])
            j = torch.from_numpy(sampler(users[b], rng))
            pu, qi, qj = net["user"](u), net["item"](i), net["item"](j)
            x = (pu * (qi - qj)).sum(-1)
            loss = -torch.nn.functional.logsigmoid(x).mean() + hp.reg * (
                pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()) / len(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        return total / max(1, len(order))

    def make_scorer():
        p, q = net["user"].weight.detach().numpy(), net["item"].weight.detach().numpy()
        return lambda us, hs: p[us] @ q.T

    record = early_stopping(net, run_epoch, make_scorer, default_validator(data, valid), hp.epochs,
                            hp.eval_every, hp.patience, type(hp).__name__)
    record.update(seed=seed, fit_s=time.time() - t0)
    return net, record


@dataclass
class BPROptions:
    dim: int = field(default=128, metadata={  # dim and reg: the best of ``grid`` on ML-100K validation NDCG@10
        "help": "factors per user and item"})
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate"})
    reg: float = field(default=1e-4, metadata={"help": "L2 weight on the batch's factors"})
    batch_size: int = field(default=1024, metadata={"help": "(user, positive, negative) triples per step"})
    epochs: int = field(default=200, metadata={"help": "most epochs (early stopping on validation NDCG@10)"})
    eval_every: int = field(default=5, metadata={"help": "validate every N epochs"})
    patience: int = field(default=5, metadata={"help": "stop after N validations without improvement"})
    init_std: float = field(default=0.1, metadata={"help": "standard deviation of the random initial factors"})


@register("bpr", BPROptions)
@dataclass
class BPR(BPROptions):
    grid: ClassVar[dict[str, list[Any]]] = {"dim": [64, 128], "reg": [1e-4, 1e-3]}
    user_factors: np.ndarray | None = field(default=None, init=False, repr=False)
    item_factors: np.ndarray | None = field(default=None, init=False, repr=False)
    fit_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> BPR:
        net, self.fit_info = fit_mf(self, data, valid, seed)
        self.user_factors = net["user"].weight.detach().numpy().copy()
        self.item_factors = net["item"].weight.detach().numpy().copy()
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        assert self.user_factors is not None and self.item_factors is not None, "fit first"
        return self.user_factors[np.asarray(users)] @ self.item_factors.T
