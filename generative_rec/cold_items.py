"""Output rows for items that training never saw, predicted from their text.

With one token per item (``atomic`` IDs) an item is ranked by its token's row of the LM head. Training moves
that row only through the item's own interactions: an item with none in the training part (a new item of the
cold-start protocol, docs/evaluation.md, or one that only ever occurs as a validation / test target) keeps its
start, which was set for a different purpose (the title's token embeddings, scaled down; the popularity start
puts it last; a collaborative start copies an embedding the source model never trained), and every softmax
step pushes it further down. Such an item is never recommended, whatever its text says.

:func:`cold_rows` learns, on the items training did see, how an item's text relates to its trained row: a
ridge regression from the text embedding (the base model's mean-pooled last hidden states over the item's
text, as content kNN uses; the adapter is switched off) to the row, its strength chosen on a seeded tenth of
those items held out. The rows of the untrained items become the regression's prediction, so the model scores
them with the same user state as every other item, through what their text shares with trained items. Only
training data is read: which items had interactions, and every item's text.

How a new item's score then meets the known items' (their scale differs: known rows were trained against
every target, predicted rows are averages) is a separate, validation-tuned choice:
``generative_rec/evaluation/new_item_prior.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

RIDGE_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)  # x the mean squared singular value


def fit_ridge(x: np.ndarray, y: np.ndarray, holdout: float = 0.1, seed: int = 0,
              grid: Sequence[float] = RIDGE_GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Ridge regression ``y ~ (x - x_mean) @ w + y_mean``. The penalty (``grid`` times the mean squared singular
    value of the centred ``x``) is the one with the lowest mean squared error on a seeded ``holdout`` share of
    the rows, fitted on the rest; the returned fit uses every row. Returns ``w, x_mean, y_mean, info``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit_ridge: x {x.shape} and y {y.shape} must be 2-D with the same number of rows")
    if len(x) < 3:
        raise ValueError(f"fit_ridge: {len(x)} rows are too few to fit and hold out")

    def solve(xs: np.ndarray, ys: np.ndarray, lams: Sequence[float]):
        xm, ym = xs.mean(0), ys.mean(0)
        u, s, vt = np.linalg.svd(xs - xm, full_matrices=False)
        uty = u.T @ (ys - ym)
        scale = float((s**2).mean()) or 1.0
        return [(vt.T @ ((s / (s**2 + lam * scale))[:, None] * uty), xm, ym) for lam in lams]

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_out = max(1, int(round(holdout * len(x))))
    out, fit = order[:n_out], order[n_out:]
    errors = {}
    for lam, (w, xm, ym) in zip(grid, solve(x[fit], y[fit], grid), strict=True):
        pred = (x[out] - xm) @ w + ym
        errors[lam] = float(((pred - y[out]) ** 2).mean())
    base_error = float(((y[fit].mean(0) - y[out]) ** 2).mean())  # predicting the mean row
    best = min(grid, key=lambda lam: (errors[lam], -lam))
    w, xm, ym = solve(x, y, [best])[0]
    info = {"rows": int(len(x)), "held_out": int(n_out), "penalty": best,
            "held_out_r2": round(1.0 - errors[best] / base_error, 4) if base_error > 0 else None,
            "held_out_mse": {str(k): round(v, 6) for k, v in errors.items()}}
    return w, xm, ym, info


def single_token_items(id_tokens: Sequence[Sequence[int]], new_ids: Sequence[int]) -> np.ndarray | None:
    """``[num_items]`` token id of every item when each ID is one token of its own that the scheme added
    (``atomic``); ``None`` otherwise (multi-token IDs share their tokens: there is no per-item row)."""
    new = set(int(t) for t in new_ids)
    if not id_tokens or any(len(seq) != 1 or int(seq[0]) not in new for seq in id_tokens):
        return None
    tokens = np.asarray([int(seq[0]) for seq in id_tokens], dtype=np.int64)
    return tokens if len(set(tokens.tolist())) == len(tokens) else None


def _head_layer(peft_model):
    """The LM head's trainable-token layer of a peft model (``trainable_token_indices['lm_head']``)."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    for name, module in peft_model.named_modules():
        if isinstance(module, TrainableTokensLayer) and "lm_head" in name.split(".")[-2:]:
            return module
    return None


@torch.no_grad()
def cold_rows(peft_model, tokenizer, item_tokens: np.ndarray, trained: np.ndarray, texts: Sequence[str],
              seed: int = 0, progress: bool = False) -> dict:
    """Replace the LM-head rows of the untrained items (``~trained``) of a LoRA model with rows predicted from
    their ``texts`` (module docstring). ``item_tokens[i]`` is item ``i``'s token. The head must be untied with
    trainable item rows (``apply_lora(..., untied=True)``): the rows are written into the adapter, so the saved
    adapter and the merged model both carry them. Returns a summary (``skipped`` with the reason when nothing
    was done)."""
    from generative_rec.embeddings import item_text_embeddings

    trained = np.asarray(trained, dtype=bool)
    cold = np.flatnonzero(~trained)
    if len(cold) == 0:
        return {"skipped": "every item has training interactions"}
    if trained.sum() < 10:
        return {"skipped": f"only {int(trained.sum())} items have training interactions: too few to fit"}
    layer = _head_layer(peft_model)
    if layer is None:
        return {"skipped": "the LM head has no trainable item rows (tied head: model.popularity_start is off)"}
    adapter = layer.active_adapters[0]
    index = {int(t): p for p, t in enumerate(layer.token_indices[adapter])}
    if any(int(t) not in index for t in item_tokens):
        return {"skipped": "some item tokens are not trainable rows of the LM head"}
    head = layer.get_merged_weights(layer.active_adapters)
    base = peft_model.get_base_model()
    with peft_model.disable_adapter():
        feats = item_text_embeddings(base, tokenizer, list(texts), progress=progress)
    y = head[torch.as_tensor(item_tokens[trained])].double().cpu().numpy()
    w, xm, ym, info = fit_ridge(feats[trained], y, seed=seed)
    pred = (feats[cold].astype(np.float64) - xm) @ w + ym
    delta = layer.trainable_tokens_delta[adapter]
    pos = torch.as_tensor([index[int(t)] for t in item_tokens[cold]])
    before = delta.data[pos].float().norm(dim=-1).mean().item()
    delta.data[pos] = torch.as_tensor(pred, dtype=delta.dtype, device=delta.device)
    known_norm = float(np.linalg.norm(y, axis=1).mean())
    return {"items": int(len(cold)), "fitted_on": int(trained.sum()), **info,
            "row_norm": {"trained_items": round(known_norm, 3), "cold_before": round(before, 3),
                         "cold_after": round(float(np.linalg.norm(pred, axis=1).mean()), 3)},
            "features": "base model, mean-pooled last hidden states of the item text"}
