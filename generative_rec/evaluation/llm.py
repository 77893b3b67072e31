"""Evaluate the fine-tuned LLM: trie-constrained top-K over the full catalogue, leave-one-out targets.

- :func:`evaluate_llm` — the model and its parts (renderer, trie, template) on a split's users; training's
  validation calls it on the model being trained;
- :func:`evaluate_bundle_llm` — a saved bundle under an :class:`~generative_rec.config.EvalSection`: what
  ``genrec eval``, the demo and ``genrec benchmark`` all run for the LLM (one path, one set of settings).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from generative_rec.data import RecData
from generative_rec.decoding.beam import SearchStats
from generative_rec.decoding.hf import rank_histories
from generative_rec.errors import ConfigError
from generative_rec.evaluation.metrics import accuracy, beyond_accuracy
from generative_rec.evaluation.validity import IdParser, parsed_validity, unconstrained_validity
from generative_rec.prompts import Renderer, Template
from generative_rec.trie import Trie


def evaluate_llm(model, renderer: Renderer, trie: Trie, data: RecData, split: str, users: np.ndarray,
                 template: Template, *, ks: Sequence[int] = (1, 5, 10, 20), num_beams: int | None = None,
                 batch_size: int = 16, pad_id: int = 0, mask_history: bool = True, max_history: int | None = 20,
                 progress: bool = True, parser: IdParser | None = None, unconstrained_users: int = 0) -> dict:
    """Metrics of the LLM on ``split`` for ``users``; history items masked when ``mask_history``.

    ``parser`` (:class:`~generative_rec.evaluation.validity.IdParser`): also report ``Validity`` / ``Distinct``
    by parsing the generated ID tokens back to items without the trie, and, for the first
    ``unconstrained_users`` users, what decoding *without* the trie returns (``Invalid (no trie)``,
    ``Duplicate (no trie)``)."""
    k = max(ks)
    examples = data.examples(split, users)
    histories = [e.history for e in examples]
    targets = np.asarray([e.target for e in examples], dtype=np.int64)
    stats = SearchStats()
    generated: list = []
    t0 = time.perf_counter()
    model_was_training = model.training
    model.eval()
    with torch.inference_mode():
        topk, scores = rank_histories(model, renderer, trie, histories, template, k, max_history, num_beams,
                                      exclude=histories if mask_history else None, batch_size=batch_size,
                                      pad_id=pad_id, progress=progress, stats=stats, tokens=generated)
    seconds = time.perf_counter() - t0
    acc = accuracy(topk, targets, ks=[x for x in ks if x <= k])
    metrics = dict(acc.means)
    metrics.update(beyond_accuracy(topk, data.train_counts, data.num_users, k=min(10, k),
                                   attributes=data.attributes if any(data.attributes) else None).means)
    if parser is not None:
        metrics.update(parsed_validity(parser, topk, generated))
        if unconstrained_users > 0:
            shown = [h[-max_history:] if max_history else h for h in histories[:unconstrained_users]]
            prompts = [renderer.prompt_ids(template, h) for h in shown]
            metrics.update(unconstrained_validity(model, parser, prompts, k, pad_id, renderer.tokenizer.eos_token_id,
                                                  batch_size=max(1, batch_size // 2)))
    if model_was_training:
        model.train()
    return {
        "metrics": metrics, "per_user": acc.per_user, "topk": topk, "scores": scores, "targets": targets,
        "users": np.asarray(users), "seconds": seconds, "users_per_s": len(users) / max(seconds, 1e-9),
        "decode_stats": {"steps": stats.steps, "rows": stats.rows, "model_s": round(stats.model_seconds, 3),
                         "mask_s": round(stats.mask_seconds, 3)},
    }


def llm_name(bundle) -> str:
    return f"LLM ({bundle.manifest.get('base_model')}, {bundle.index.scheme} IDs)"


def evaluate_bundle_llm(bundle, data: RecData, users: np.ndarray, cfg, model=None, progress: bool = True) -> dict:
    """:func:`evaluate_llm` for a saved bundle with the settings of ``cfg`` (an ``EvalSection``); adds
    ``template`` (the key used) and ``model`` (the loaded HF model, for reuse) to the result."""
    from generative_rec.bundle import load_bundle_model

    if data.item_ids != bundle.item_ids:
        raise ConfigError(f"the data at {data.path} has a different catalogue than the bundle {bundle.path} "
                          "was trained on")
    model = model if model is not None else load_bundle_model(bundle)
    tpl = bundle.template(cfg.template)
    res = evaluate_llm(model, bundle.renderer, bundle.trie, data, cfg.split, users, tpl, ks=tuple(cfg.ks),
                       num_beams=cfg.num_beams, batch_size=cfg.batch_size, pad_id=bundle.tokenizer.pad_token_id,
                       mask_history=cfg.mask_history, max_history=bundle.manifest.get("max_history"),
                       progress=progress, parser=IdParser(bundle.index, bundle.tokenizer),
                       unconstrained_users=cfg.unconstrained_users)
    return {**res, "template": tpl.key, "model": model}


def rank_bundle_among_new(bundle, data: RecData, users: np.ndarray, cfg, model, progress: bool = True) -> dict:
    """The bundle's LLM ranking the new items only (:mod:`~generative_rec.evaluation.slices`), for the users of
    ``users`` whose ``cfg.split`` target is a new item: the trie-constrained search with every known item
    (and the history) excluded, so its top-K are the K most likely new items."""
    from generative_rec.evaluation.slices import new_only_exclusions, new_target_users

    sel = new_target_users(data, users, cfg.split)
    out: dict = {"users": int(len(sel)), "candidates": int(data.new_items.sum())}
    if not len(sel):
        return out
    examples = data.examples(cfg.split, sel)
    histories = [e.history for e in examples]
    k = max(cfg.ks)
    with torch.inference_mode():
        topk, _ = rank_histories(model, bundle.renderer, bundle.trie, histories, bundle.template(cfg.template), k,
                                 bundle.manifest.get("max_history"), cfg.num_beams,
                                 exclude=new_only_exclusions(data, histories), batch_size=cfg.batch_size,
                                 pad_id=bundle.tokenizer.pad_token_id, progress=progress)
    targets = np.asarray([e.target for e in examples], dtype=np.int64)
    out.update(accuracy(topk, targets, [x for x in cfg.ks if x <= k]).means)
    return out
