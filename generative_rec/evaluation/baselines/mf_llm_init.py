"""BPR-MF whose item factors start from a PCA projection of given item embeddings (e.g. the LLM's).

The embeddings are centred, projected on their top ``dim`` principal components and scaled so that the
factors have standard deviation ``init_std`` (the scale of the random initialisation of plain BPR-MF);
user factors start random. Training, negatives and early stopping are those of
:mod:`~generative_rec.evaluation.baselines.bpr` (:func:`~.bpr.fit_mf`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register
from generative_rec.evaluation.baselines.bpr import fit_mf


def pca_init(embeddings: np.ndarray, dim: int, std: float) -> np.ndarray:
    """Top-``dim`` principal-component scores of ``embeddings`` scaled to overall std ``std``; columns
    beyond the rank of the matrix are zero."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    comps = u[:, :dim] * s[:dim]
    out = np.zeros((x.shape[0], dim))
    out[:, : comps.shape[1]] = comps
    scale = out.std()
    return (out * (std / scale if scale > 0 else 0.0)).astype(np.float32)


@register("mf_llm_init")
@dataclass
class MFLLMInit:
    item_embeddings: np.ndarray | None = field(default=None, repr=False)
    dim: int = 128  # dim and reg: the best of ``grid`` on ML-100K validation NDCG@10
    lr: float = 2e-3
    reg: float = 1e-4
    batch_size: int = 1024
    epochs: int = 200
    eval_every: int = 5
    patience: int = 5
    init_std: float = 0.1

    grid: ClassVar[dict[str, list[Any]]] = {"dim": [64, 128], "reg": [1e-4, 1e-3]}
    user_factors: np.ndarray | None = field(default=None, init=False, repr=False)
    item_factors: np.ndarray | None = field(default=None, init=False, repr=False)
    fit_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> MFLLMInit:
        if self.item_embeddings is None or np.shape(self.item_embeddings)[0] != data.num_items:
            raise ValueError(f"mf_llm_init needs item_embeddings [{data.num_items}, d]")
        init = pca_init(self.item_embeddings, self.dim, self.init_std)
        net, self.fit_info = fit_mf(self, data, valid, seed, item_init=init)
        self.user_factors = net["user"].weight.detach().numpy().copy()
        self.item_factors = net["item"].weight.detach().numpy().copy()
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        assert self.user_factors is not None and self.item_factors is not None, "fit first"
        return self.user_factors[np.asarray(users)] @ self.item_factors.T
