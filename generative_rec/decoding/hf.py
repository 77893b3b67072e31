"""Constrained decoding on HF transformers models.

- :class:`HFScorer`: a KV-cached :class:`~generative_rec.decoding.beam.Scorer` (one prompt pass, then one
  token per beam per step) used by evaluation and training-time validation; batched over prompts.
- :func:`hf_generate_topk`: the *reference* decoder — plain ``model.generate`` beam search with a trie
  logits processor (``TrieLogitsProcessor``). Slow, simple, and what the fast paths are tested against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from generative_rec.decoding.beam import Beam, Ranked, SearchStats, constrained_beam_search
from generative_rec.trie import Trie

if TYPE_CHECKING:
    from generative_rec.prompts import Renderer, Template


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    return ids, mask


class HFScorer:
    """Scores beams with an HF causal LM, reusing the prompt's KV cache across beam steps."""

    def __init__(self, model, pad_id: int):
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def start(self, prompts: Sequence[Sequence[int]]) -> None:
        ids, mask = left_pad(prompts, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        self.cache = out.past_key_values
        self.mask = mask
        self.lengths = mask.sum(-1)
        self.first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        self.step_no = 0
        self.rows = None  # prompt index of each cache row

    @torch.inference_mode()
    def step(self, beams: Sequence[Beam]) -> torch.Tensor:
        if self.step_no == 0:
            self.step_no = 1
            self.rows = torch.tensor([b.prompt for b in beams], device=self.device)
            return self.first[self.rows]
        parent = torch.tensor([b.parent_row for b in beams], device=self.device)
        self.cache.reorder_cache(parent)
        self.mask = self.mask.index_select(0, parent)
        self.rows = self.rows.index_select(0, parent)
        new = torch.tensor([[b.tokens[-1]] for b in beams], device=self.device)
        self.mask = torch.cat([self.mask, torch.ones((len(beams), 1), dtype=self.mask.dtype, device=self.device)], 1)
        pos = (self.lengths.index_select(0, self.rows) + self.step_no - 1)[:, None]
        out = self.model(input_ids=new, attention_mask=self.mask, position_ids=pos, past_key_values=self.cache,
                         use_cache=True)
        self.cache = out.past_key_values
        self.step_no += 1
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)


def hf_topk(model, prompts: Sequence[Sequence[int]], trie: Trie, k: int, pad_id: int,
            num_beams: int | None = None, exclude: Sequence[Iterable[int]] | None = None,
            batch_size: int = 16, stats: SearchStats | None = None) -> list[Ranked]:
    """Top-``k`` items per prompt with the KV-cached HF scorer, ``batch_size`` prompts at a time."""
    out: list[Ranked] = []
    excl = list(exclude) if exclude is not None else [None] * len(prompts)
    for lo in range(0, len(prompts), batch_size):
        scorer = HFScorer(model, pad_id)
        out += constrained_beam_search(scorer, prompts[lo: lo + batch_size], trie, k, num_beams,
                                       excl[lo: lo + batch_size], stats=stats)
    return out


# --------------------------------------------------------------------------- reference: HF generate
class TrieLogitsProcessor(LogitsProcessor):
    """Masks every token the trie does not allow after the generated prefix.

    Applied to log-probabilities inside HF beam search (``log_softmax`` comes first), so allowed tokens
    keep their full-vocabulary log-prob. Once an ID is complete (a leaf) only EOS is allowed, with score
    0, so a finished beam's score is exactly the sum of its ID tokens' log-probs.
    """

    def __init__(self, trie: Trie, prompt_len: int, eos_id: int, banned: dict[int, int] | None = None):
        self.trie, self.prompt_len, self.eos_id, self.banned = trie, prompt_len, eos_id, banned

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, -float("inf"))
        for r in range(input_ids.shape[0]):
            gen = input_ids[r, self.prompt_len:].tolist()
            node = self.trie.walk(gen)
            if node < 0:
                out[r, self.eos_id] = 0.0  # finished beam padding; HF will not extend it further
                continue
            if self.trie.is_leaf(node):
                out[r, self.eos_id] = 0.0
                continue
            allowed = torch.from_numpy(self.trie.allowed_excluding(node, self.banned).astype(np.int64))
            out[r, allowed] = scores[r, allowed]
        return out


@torch.inference_mode()
def hf_generate_topk(model, prompt: Sequence[int], trie: Trie, k: int, eos_id: int,
                     num_beams: int | None = None, exclude: Iterable[int] | None = None) -> Ranked:
    """Reference top-``k`` for one prompt via ``model.generate`` beam search (``length_penalty=0``)."""
    num_beams = max(k, num_beams or k)
    banned = trie.exclusion(exclude) if exclude is not None else None
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt)], device=device)
    proc = TrieLogitsProcessor(trie, ids.shape[1], eos_id, banned)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=num_beams, num_return_sequences=num_beams,
        max_new_tokens=trie.max_depth + 1, length_penalty=0.0, early_stopping=True, do_sample=False,
        logits_processor=LogitsProcessorList([proc]), output_scores=True, return_dict_in_generate=True,
        pad_token_id=eos_id, eos_token_id=eos_id,
    )
    items, scores = [], []
    for seq, score in zip(out.sequences, out.sequences_scores, strict=True):
        gen = seq[ids.shape[1]:].tolist()
        while gen and gen[-1] == eos_id:
            gen.pop()
        item = trie.item_of(gen)
        if item >= 0 and item not in items and np.isfinite(float(score)):
            items.append(item)
            scores.append(float(score))
    order = sorted(range(len(items)), key=lambda j: (-scores[j], items[j]))[:k]
    return Ranked([items[j] for j in order], [scores[j] for j in order])


def rank_histories(model, renderer: Renderer, trie: Trie, histories: Sequence[np.ndarray], template: Template, k: int,
             max_history: int | None = None, num_beams: int | None = None, exclude: Sequence | None = None,
             batch_size: int = 16, pad_id: int = 0, progress: bool = True,
             stats: SearchStats | None = None, tokens: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices ``[U, k]`` (-1 padded) and their sequence log-probs for each history (catalogue rows,
    oldest first; the prompt shows the last ``max_history``), decoded by :func:`hf_topk` in length-sorted batches.

    ``tokens``: a list that receives, per history, the generated ID tokens of its ranked items."""
    from tqdm.auto import tqdm

    prompts = [renderer.prompt_ids(template, h[-max_history:] if max_history else h) for h in histories]
    topk = np.full((len(prompts), k), -1, dtype=np.int64)
    scores = np.full((len(prompts), k), -np.inf)
    excl = list(exclude) if exclude is not None else [None] * len(prompts)
    # Longest prompts first, in batches of similar length (less padding).
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    generated: list = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), desc="decode", disable=not progress, dynamic_ncols=True)
    for lo in range(0, len(order), batch_size):
        idx = order[lo: lo + batch_size]
        res = hf_topk(model, [prompts[i] for i in idx], trie, k, pad_id, num_beams, [excl[i] for i in idx],
                      batch_size=batch_size, stats=stats)
        for i, r in zip(idx, res, strict=True):
            topk[i, : len(r.items)] = r.items
            scores[i, : len(r.scores)] = r.scores
            generated[i] = r.tokens
        bar.update(len(idx))
    bar.close()
    if tokens is not None:
        tokens.extend(generated)
    return topk, scores
