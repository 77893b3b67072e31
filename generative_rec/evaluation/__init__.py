"""Evaluation: ranking metrics, full-catalogue ranking under leave-one-out, and classic baselines."""

from generative_rec.evaluation.metrics import (
    KS,
    MetricResult,
    PairedTest,
    accuracy,
    format_table,
    paired_significance,
)
from generative_rec.evaluation.ranking import Evaluation, Ranking, evaluate_model, ndcg_validator, rank_full

__all__ = [
    "KS", "Evaluation", "MetricResult", "PairedTest", "Ranking", "accuracy", "evaluate_model", "format_table",
    "ndcg_validator", "paired_significance", "rank_full",
]
