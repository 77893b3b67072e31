"""Explanations generated with an HF model: the reference of what vLLM serves, and what evaluation runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from generative_rec.explain.contract import (
    MAX_NEW_TOKENS,
    ExplainSettings,
    clean_explanation,
    explain_prompt_ids,
    explain_settings,
    explain_template,
)


@torch.inference_mode()
def generate_explanations(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int = MAX_NEW_TOKENS,
                          batch_size: int = 8, suppress_token_ids: Sequence[int] = (), eos_token_id: int | None = None,
                          progress: bool = False) -> list[str]:
    """Greedy explanations for token-id prompts, batched (left padding, longest first), stop at EOS."""
    from tqdm.auto import tqdm

    from generative_rec.decoding.hf import left_pad

    if not prompts:
        return []
    eos = eos_token_id if eos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = [""] * len(prompts)
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    kwargs = {"suppress_tokens": list(suppress_token_ids)} if len(suppress_token_ids) else {}
    bar = tqdm(total=len(prompts), desc="explain", disable=not progress, dynamic_ncols=True)
    for lo in range(0, len(order), batch_size):
        idx = order[lo: lo + batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], pad)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad, temperature=None,
                             top_p=None, top_k=None, **kwargs)
        for row, i in enumerate(idx):
            out[i] = clean_explanation(tokenizer.decode(gen[row, ids.shape[1]:], skip_special_tokens=True))
        bar.update(len(idx))
    bar.close()
    if was_training:
        model.train()
    return out


def explain_items(bundle, model, history_rows: Sequence[int], items: Sequence[int], template: str | None = None,
                  settings: ExplainSettings | None = None, batch_size: int = 8) -> list[str]:
    """One explanation per recommended item for one history (the HF reference of what serving returns)."""
    s = settings or explain_settings(bundle, template=template)
    t = explain_template(bundle, s.template)
    prompts = [explain_prompt_ids(bundle, history_rows, i, t, s.max_history) for i in items]
    return generate_explanations(model, bundle.tokenizer, prompts, s.max_new_tokens, batch_size, s.suppress_token_ids,
                                 s.eos_token_id)
