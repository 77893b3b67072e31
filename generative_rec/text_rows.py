"""Item rows tied to the item's text, trained to stand in for items the model never saw (``model.text_rows``).

With one token per item (``atomic`` IDs) the LM head scores item ``i`` by its row ``r_i``. A row only learns from
the item's own interactions, so a new item has nothing to show. ``model.cold_rows`` (cold_items.py) predicts
such rows after training, from text, but the user states were never trained to make sense of a predicted
row, and its scale has to be patched on afterwards (evaluation/new_item_prior.py).

Here every item token's row becomes ``r_i + P t_i``: a free part and a text part, ``t_i`` the item's fixed text
vector (the base model's mean-pooled hidden states over the item text, centred and scaled to unit mean norm)
and ``P`` one trainable projection shared by every item, starting at zero (step 0 is the plain model). At every
training step a random ``dropout`` share of the trained items loses its free part: their rows become
``m + P t_i``, ``m`` the mean free row of the trained items (DropoutNet's trick, Volkovs et al., NeurIPS 2017).
Those items still have to be ranked right in the same softmax, against every full row, so ``P`` and the LoRA
user states learn together to recommend an item from its text alone, at the scale of the real rows. Items with no
training interaction are left out of the training softmax (they are not in the catalogue yet, as far as
training knows). After training, :meth:`TextRows.fold` writes ``r_i + P t_i`` into every trained item's row and
``m + P t_i`` into every untrained one, so the saved and merged model needs nothing else: vLLM serves it as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def text_vectors(features: np.ndarray) -> torch.Tensor:
    """Centred item text features scaled to unit mean norm (``[num_items, dim]`` float32)."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    x = x - x.mean(0)
    return x / x.norm(dim=-1).mean().clamp_min(1e-6)


class TextRows(torch.nn.Module):
    """``r_i + P t_i`` item rows with free-part dropout (module docstring). ``token_ids[i]`` is item ``i``'s
    token, ``trained[i]`` whether it has training interactions."""

    def __init__(self, token_ids: Sequence[int], vectors: torch.Tensor, trained: np.ndarray, vocab_size: int,
                 hidden: int, dropout: float):
        super().__init__()
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"text rows: dropout must be in (0, 1), not {dropout}")
        if not np.asarray(trained, dtype=bool).any():
            raise ValueError("text rows: no item has training interactions")
        row_of = torch.full((vocab_size,), -1, dtype=torch.long)
        row_of[torch.as_tensor(list(token_ids))] = torch.arange(len(token_ids))
        self.register_buffer("vectors", vectors.float().clone(), persistent=False)
        self.register_buffer("token_ids", torch.as_tensor(list(token_ids), dtype=torch.long), persistent=False)
        self.register_buffer("row_of", row_of, persistent=False)
        self.register_buffer("trained", torch.as_tensor(np.asarray(trained, dtype=bool)), persistent=False)
        self.w = torch.nn.Parameter(torch.zeros(hidden, vectors.shape[1]))
        self.dropout = float(dropout)
        self._handle = None

    def text_part(self) -> torch.Tensor:
        """``[num_items, hidden]``: ``P t_i`` for every item."""
        return self.vectors @ self.w.T

    def untrained_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Mask over ``ids``: tokens of items with no training interaction (left out of the training softmax)."""
        at = self.row_of[ids]
        return (at >= 0) & ~self.trained[at.clamp_min(0)]

    def rows(self, free: torch.Tensor, ids: torch.Tensor, training: bool) -> torch.Tensor:
        """The rows of ``ids`` (``free``: their head rows) with the text part added; in training, a fresh random
        ``dropout`` share of the trained items among them has its free part replaced by the mean free row."""
        at = self.row_of[ids]
        item = at >= 0
        text = self.text_part()[at.clamp_min(0)] * item[:, None].to(free.dtype)
        out = free + text.to(free.dtype)
        if not training:
            return out
        known = item & self.trained[at.clamp_min(0)]
        if not bool(known.any()):
            return out
        mean = free[known].mean(0).detach()
        drop = known & (torch.rand(len(ids), device=ids.device) < self.dropout)
        return torch.where(drop[:, None], mean + text.to(free.dtype), out)

    def attach(self, model) -> None:
        """Add the text part to the LM head's output for every other use during training (validation, text
        targets): the model then always scores with ``r_i + P t_i``."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model

        def add_output(_mod, args, out):
            extra = args[0] @ self.text_part().T.to(args[0].dtype)
            return out.index_add(-1, self.token_ids, extra.to(out.dtype))

        self._handle = base.get_output_embeddings().register_forward_hook(add_output)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @torch.no_grad()
    def fold(self, model) -> dict:
        """Write the rows into the model (peft trainable-token rows, or the plain weight) and remove the hook:
        trained items ``r_i + P t_i``, untrained ones ``m + P t_i``. Returns a summary."""
        self.detach()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = base.get_output_embeddings()
        adapter = getattr(head, "token_adapter", None)
        weight = head.weight if adapter is None else adapter.get_merged_weights(adapter.active_adapters)
        free = weight[self.token_ids].float()
        text = self.text_part()
        mean = free[self.trained].mean(0)
        new = torch.where(self.trained[:, None], free + text, mean + text)
        if adapter is None:
            head.weight[self.token_ids] = new.to(head.weight.dtype)
        else:
            for name in adapter.active_adapters:
                where = {int(t): j for j, t in enumerate(adapter.token_indices[name])}
                pos = torch.as_tensor([where[int(t)] for t in self.token_ids])
                delta = adapter.trainable_tokens_delta[name]
                delta[pos] = new.to(delta.dtype)
        self.w.zero_()
        n_new = int((~self.trained).sum())
        return {"items": len(self.token_ids), "untrained_items": n_new, "dropout": self.dropout,
                "text_norm": round(float(text.norm(dim=-1).mean()), 3),
                "free_norm": round(float((free[self.trained] - mean).norm(dim=-1).mean()), 3)}
