"""LightGCN (He et al., 2020): linear graph convolution on the user-item training graph, BPR loss.

``E_0`` are free user and item embeddings; ``E_{l+1} = D^-1/2 A D^-1/2 E_l`` on the bipartite graph of
training interactions; the final embedding is the mean of ``E_0..E_L``; ``score(u, i) = e_u · e_i``. The
L2 penalty is on the layer-0 embeddings of the batch. Early stopping on validation NDCG@10.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register
from generative_rec.evaluation.baselines.common import (
    NegativeSampler,
    default_validator,
    early_stopping,
    interaction_matrix,
    seed_everything,
    train_pairs,
)


def normalized_adjacency(r: sp.csr_matrix) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite graph ``A = [[0, R], [R^T, 0]]`` as a torch sparse COO tensor
    (isolated nodes, e.g. items never seen in training, get an all-zero row)."""
    a = sp.bmat([[None, r], [r.T, None]], format="csr").astype(np.float64)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.power(deg, -0.5, out=np.zeros_like(deg), where=deg > 0)
    a = (sp.diags(inv) @ a @ sp.diags(inv)).tocoo()
    idx = torch.from_numpy(np.vstack([a.row, a.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(a.data.astype(np.float32)), a.shape,
                                   check_invariants=False).coalesce()


class LightGCNNet(torch.nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int, layers: int, adj: torch.Tensor):
        super().__init__()
        self.num_users, self.layers, self.adj = num_users, layers, adj
        self.emb = torch.nn.Embedding(num_users + num_items, dim)
        torch.nn.init.normal_(self.emb.weight, std=0.1)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (layer-mean) user and item embeddings."""
        e = self.emb.weight
        acc = e
        for _ in range(self.layers):
            e = torch.sparse.mm(self.adj, e)
            acc = acc + e
        out = acc / (self.layers + 1)
        return out[: self.num_users], out[self.num_users:]


@dataclass
class LightGCNOptions:
    dim: int = field(default=64, metadata={"help": "embedding size of users and items"})
    layers: int = field(default=2, metadata={  # layers and reg: the best of ``grid`` on ML-100K validation NDCG@10
        "help": "graph convolution layers"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate"})
    reg: float = field(default=1e-4, metadata={"help": "L2 weight on the batch's layer-0 embeddings"})
    batch_size: int = field(default=4096, metadata={"help": "(user, positive, negative) triples per step"})
    epochs: int = field(default=300, metadata={"help": "most epochs (early stopping on validation NDCG@10)"})
    eval_every: int = field(default=5, metadata={"help": "validate every N epochs"})
    patience: int = field(default=4, metadata={"help": "stop after N validations without improvement"})


@register("lightgcn", LightGCNOptions)
@dataclass
class LightGCN(LightGCNOptions):
    grid: ClassVar[dict[str, list[Any]]] = {"layers": [2, 3], "reg": [1e-4, 1e-3]}
    user_factors: np.ndarray | None = field(default=None, init=False, repr=False)
    item_factors: np.ndarray | None = field(default=None, init=False, repr=False)
    fit_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> LightGCN:
        t0 = time.time()
        rng = seed_everything(seed)
        users, items = train_pairs(data)
        sampler = NegativeSampler(users, items, data.num_items)
        net = LightGCNNet(data.num_users, data.num_items, self.dim, self.layers,
                          normalized_adjacency(interaction_matrix(data)))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        nu = data.num_users

        def run_epoch(epoch: int) -> float:
            order = rng.permutation(len(users))
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                b = order[start:start + self.batch_size]
                u, i = torch.from_numpy(users[b]), torch.from_numpy(items[b])
                j = torch.from_numpy(sampler(users[b], rng))
                eu, ei = net.propagate()
                x = (eu[u] * (ei[i] - ei[j])).sum(-1)
                e0 = net.emb.weight
                reg = e0[u].pow(2).sum() + e0[nu + i].pow(2).sum() + e0[nu + j].pow(2).sum()
                loss = -torch.nn.functional.logsigmoid(x).mean() + self.reg * reg / len(b)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            return total / max(1, len(order))

        def make_scorer():
            eu, ei = (t.numpy() for t in net.propagate())
            return lambda us, hs: eu[us] @ ei.T

        self.fit_info = early_stopping(net, run_epoch, make_scorer, default_validator(data, valid),
                                       self.epochs, self.eval_every, self.patience, "LightGCN")
        with torch.no_grad():
            eu, ei = net.propagate()
        self.user_factors, self.item_factors = eu.numpy().copy(), ei.numpy().copy()
        self.fit_info.update(seed=seed, fit_s=time.time() - t0)
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        assert self.user_factors is not None and self.item_factors is not None, "fit first"
        return self.user_factors[np.asarray(users)] @ self.item_factors.T
