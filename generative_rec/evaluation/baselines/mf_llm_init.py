"""BPR-MF whose item factors start from a PCA projection of given item embeddings (e.g. the LLM's).

The embeddings are centred, projected on their top ``dim`` principal components and scaled so that the
factors have standard deviation ``init_std`` (the scale of the random initialisation of plain BPR-MF);
user factors start random. Training, negatives and early stopping are those of
:mod:`~generative_rec.evaluation.baselines.bpr` (:func:`~.bpr.fit_mf`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register
from generative_rec.evaluation.baselines.bpr import BPR, BPROptions, fit_mf


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


@register("mf_llm_init", BPROptions)
@dataclass
class MFLLMInit(BPR):
    """:class:`~.bpr.BPR` (same hyper-parameters and grid) with item factors started from embeddings."""

    item_embeddings: np.ndarray | None = field(default=None, repr=False)  # run-time input, not an option

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> MFLLMInit:
        if self.item_embeddings is None or np.shape(self.item_embeddings)[0] != data.num_items:
            raise ValueError(f"mf_llm_init needs item_embeddings [{data.num_items}, d]")
        init = pca_init(self.item_embeddings, self.dim, self.init_std)
        net, self.fit_info = fit_mf(self, data, valid, seed, item_init=init)
        self.user_factors = net["user"].weight.detach().numpy().copy()
        self.item_factors = net["item"].weight.detach().numpy().copy()
        return self
