"""SASRec: a causal self-attention model over the item sequence (Kang & McAuley, 2018), in torch.

Trained on the training part of every sequence to predict, at EVERY position, the next item with a
softmax cross-entropy over the FULL catalogue (the "SASRec + CE" variant, stronger than the original
sampled binary loss). Sequences longer than ``max_len + 1`` are cut into consecutive windows from the end,
so no training transition is dropped. Item embeddings are tied between input and output. At scoring
time the last ``max_len`` history items are read and the last position's output is scored against every
item. Early stopping on validation NDCG@10.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from generative_rec.data.dataset import RecData
from generative_rec.evaluation.baselines.base import Validator, register
from generative_rec.evaluation.baselines.common import default_validator, early_stopping, seed_everything


class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head self-attention, then a position-wise feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRecNet(nn.Module):
    """Item ids are shifted by one inside the net: 0 is left padding."""

    def __init__(self, num_items: int, dim: int, heads: int, blocks: int, max_len: int, dropout: float):
        super().__init__()
        self.item = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(blocks))
        self.ln = nn.LayerNorm(dim)
        nn.init.normal_(self.item.weight, std=dim ** -0.5)
        nn.init.normal_(self.pos.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq [B, L]`` (shifted ids, left-padded with 0) -> hidden states ``[B, L, dim]``."""
        length = seq.shape[1]
        valid = seq > 0
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # attend to earlier real items; every position also sees itself (no all-masked rows for padding)
        mask = (causal & valid[:, None, :]) | torch.eye(length, dtype=torch.bool, device=seq.device)
        x = self.item(seq) * self.item.embedding_dim ** 0.5 + self.pos.weight[-length:]
        x = self.drop(x) * valid[..., None]
        for blk in self.blocks:
            x = blk(x, mask[:, None])
        return self.ln(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over the real catalogue (padding row excluded): ``[..., num_items]``."""
        return h @ self.item.weight[1:].T


def windows(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each sequence into ``(input, target)`` windows of ``max_len`` next-item transitions, from the
    end backwards; shifted ids (item + 1), left-padded with 0. Sequences of length < 2 give nothing."""
    xs, ys = [], []
    for s in seqs:
        s = np.asarray(s, dtype=np.int64) + 1
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            chunk = s[start:end]
            x, y = np.zeros(max_len, np.int64), np.zeros(max_len, np.int64)
            x[max_len - len(chunk) + 1:] = chunk[:-1]
            y[max_len - len(chunk) + 1:] = chunk[1:]
            xs.append(x)
            ys.append(y)
            end = start + 1  # the next window ends with this window's first input item
    if not xs:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    return np.stack(xs), np.stack(ys)


def last_items(histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """The last ``max_len`` items of each history as shifted, left-padded ids ``[B, max_len]``."""
    out = np.zeros((len(histories), max_len), np.int64)
    for r, h in enumerate(histories):
        h = np.asarray(h[-max_len:], dtype=np.int64)
        if len(h):
            out[r, max_len - len(h):] = h + 1
    return torch.from_numpy(out)


@dataclass
class SASRecOptions:
    dim: int = field(default=64, metadata={"help": "hidden size (item and position embeddings)"})
    heads: int = field(default=1, metadata={"help": "attention heads (must divide dim)"})
    blocks: int = field(default=2, metadata={"help": "transformer blocks"})
    max_len: int = field(default=50, metadata={"help": "most recent history items read"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings, attention and feed-forward"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay (L2)"})
    batch_size: int = field(default=128, metadata={"help": "training windows per step"})
    epochs: int = field(default=200, metadata={"help": "most epochs (early stopping on validation NDCG@10)"})
    eval_every: int = field(default=3, metadata={"help": "validate every N epochs"})
    patience: int = field(default=4, metadata={"help": "stop after N validations without improvement"})


@register("sasrec", SASRecOptions)
@dataclass
class SASRec(SASRecOptions):
    # max_len 200 was tried on ML-100K: 2-3x slower per epoch on CPU, not better at equal epochs
    grid: ClassVar[dict[str, list[Any]]] = {"dropout": [0.2, 0.5]}
    net: SASRecNet | None = field(default=None, init=False, repr=False)
    fit_info: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def fit(self, data: RecData, valid: Validator | None = None, seed: int = 0) -> SASRec:
        t0 = time.time()
        rng = seed_everything(seed)
        x_all, y_all = windows(data.train_sequences(), self.max_len)
        x_all, y_all = torch.from_numpy(x_all), torch.from_numpy(y_all)
        net = SASRecNet(data.num_items, self.dim, self.heads, self.blocks, self.max_len, self.dropout)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.net = net

        def run_epoch(epoch: int) -> float:
            order = torch.from_numpy(rng.permutation(len(x_all)))
            total, count = 0.0, 0
            for start in range(0, len(order), self.batch_size):
                b = order[start:start + self.batch_size]
                x, y = x_all[b], y_all[b]
                keep = y > 0
                h = net(x)[keep]
                loss = F.cross_entropy(net.logits(h), y[keep] - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * int(keep.sum())
                count += int(keep.sum())
            return total / max(1, count)

        self.fit_info = early_stopping(net, run_epoch, lambda: self.score, default_validator(data, valid),
                                       self.epochs, self.eval_every, self.patience, "SASRec")
        self.fit_info.update(seed=seed, fit_s=time.time() - t0, windows=len(x_all))
        return self

    @torch.no_grad()
    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        assert self.net is not None, "fit first"
        was_training = self.net.training
        self.net.eval()
        h = self.net(last_items(histories, self.max_len))[:, -1]
        self.net.train(was_training)
        return self.net.logits(h).numpy()
