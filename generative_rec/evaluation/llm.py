"""Evaluate the fine-tuned LLM: trie-constrained top-K over the full catalogue, leave-one-out targets."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from generative_rec.data import RecData
from generative_rec.decoding.beam import SearchStats
from generative_rec.decoding.hf import rank_histories
from generative_rec.evaluation.metrics import accuracy, beyond_accuracy
from generative_rec.prompts import Renderer, Template
from generative_rec.trie import Trie


def evaluate_llm(model, renderer: Renderer, trie: Trie, data: RecData, split: str, users: np.ndarray,
                 template: Template, ks: Sequence[int] = (1, 5, 10, 20), num_beams: int | None = None,
                 batch_size: int = 16, pad_id: int = 0, mask_history: bool = True, max_history: int | None = 20,
                 progress: bool = True) -> dict:
    """Metrics of the LLM on ``split`` for ``users``; history items masked when ``mask_history``."""
    k = max(ks)
    examples = data.examples(split, users)
    histories = [e.history for e in examples]
    targets = np.asarray([e.target for e in examples], dtype=np.int64)
    stats = SearchStats()
    t0 = time.perf_counter()
    model_was_training = model.training
    model.eval()
    with torch.inference_mode():
        topk, scores = rank_histories(model, renderer, trie, histories, template, k, max_history, num_beams,
                                exclude=histories if mask_history else None, batch_size=batch_size, pad_id=pad_id,
                                progress=progress, stats=stats)
    if model_was_training:
        model.train()
    seconds = time.perf_counter() - t0
    acc = accuracy(topk, targets, ks=[x for x in ks if x <= k])
    metrics = dict(acc.means)
    metrics.update(beyond_accuracy(topk, data.train_counts, data.num_users, k=min(10, k),
                                   attributes=data.attributes if any(data.attributes) else None).means)
    valid = (topk >= 0)
    metrics["Validity"] = float(np.mean([trie.item_leaf[i] >= 0 for i in topk[valid]])) if valid.any() else float("nan")
    metrics["Distinct"] = float(np.mean([len(set(r[r >= 0])) == int((r >= 0).sum()) for r in topk]))
    return {
        "metrics": metrics, "per_user": acc.per_user, "topk": topk, "scores": scores, "targets": targets,
        "users": np.asarray(users), "seconds": seconds, "users_per_s": len(users) / max(seconds, 1e-9),
        "decode_stats": {"steps": stats.steps, "rows": stats.rows, "model_s": round(stats.model_seconds, 3),
                         "mask_s": round(stats.mask_seconds, 3)},
    }
