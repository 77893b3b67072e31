"""The benchmark tiers: which models, grids and budgets (``--tier``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODELS = ("pop", "itemknn", "bpr", "sasrec", "lightgcn", "content_knn", "mf_llm_init", "llm")
CONTENT_MODELS = ("content_knn", "mf_llm_init")  # need item embeddings from the LLM's base model
KS = (1, 5, 10, 20)
TARGET_RATIO = 1.3  # the bar: LLM NDCG@10 >= 1.3 x the best classic baseline (full tier, GPU)


@dataclass(frozen=True)
class Tier:
    """Grids and budgets of one benchmark tier. A model missing from ``grids`` uses its own ``grid``."""

    name: str
    llm_config: str  # relative to the repository root
    grids: dict[str, dict[str, list]] = field(default_factory=dict)
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. epoch caps
    llm_batch_size: int = 16
    budget: str = ""
    llm_set: list[str] = field(default_factory=list)  # overrides of llm_config (before the user's --llm-set)


# On ML-100K the full grids chose bpr/mf dim=128 reg=1e-4 (best epoch 30), lightgcn layers=2 reg=1e-4 (best
# epoch 70), sasrec dropout=0.2 (best epoch 48): the CPU tiers keep those regions.
CPU_GRIDS = {"bpr": {"dim": [128], "reg": [1e-4, 1e-3]}, "lightgcn": {"layers": [2], "reg": [1e-4]},
             "sasrec": {"dropout": [0.2]}, "mf_llm_init": {"dim": [128], "reg": [1e-4]}}
CPU_FIXED = {"bpr": {"epochs": 100}, "lightgcn": {"epochs": 80}, "sasrec": {"epochs": 45},
             "mf_llm_init": {"epochs": 100}}


TIERS = {
    "cpu": Tier(
        "cpu", "train/configs/cpu_tier.yaml",
        grids=CPU_GRIDS, fixed=CPU_FIXED,
        llm_batch_size=16,
        budget="<= 30 min on 2 idle CPU cores including LLM training (cpu_tier.yaml) and decoding",
    ),
    "cpu-long": Tier(
        "cpu-long", "train/configs/cpu_tier.yaml", llm_set=["train.max_steps=1200", "train.save_every=100"],
        grids=CPU_GRIDS, fixed=CPU_FIXED,
        llm_batch_size=16,
        budget="<= 2 h on 2 idle CPU cores: the CPU tier's baselines, the LLM trained 4x longer (~4 passes)",
    ),
    "full": Tier("full", "train/configs/full_gpu.yaml", llm_batch_size=64,
                 budget="a GPU for the LLM (trained to convergence on all training windows); full grids, "
                        "no epoch caps"),
}
