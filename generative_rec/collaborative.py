"""Collaborative knowledge for the LLM's item tokens, from the project's own baselines.

An LLM that meets item tokens for the first time has to learn every item's input and output row from a
pass or two over the interactions; a collaborative model (SASRec, BPR, LightGCN) learns the same
catalogue geometry in seconds to minutes. This module trains such a *source* model on the training part
of every sequence (a fixed number of epochs, never a validation or test target) and hands the LLM:

- ``item_embeddings [num_items, d]``: where the new item tokens' rows start (``start``, E4SRec-style) or
  what a trainable projector maps into the LLM (``fuse``, LLaRA / CoLLM-style);
- ``teacher``: for sequential sources, the next-item distribution after any prefix of a user's sequence,
  which training can distil into the LLM (a KL term at every next-item position).

Nothing here knows about LLMs or tokens: it is collaborative models in, arrays and a scoring function out.
The fitted source is cached under ``$GENREC_HOME/collaborative`` keyed on exactly what it depends on (the
training sequences, the source, its parameters, epochs and seed), so a second run with another LLM
setting does not retrain it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generative_rec.errors import ConfigError
from generative_rec.io import atomic_write_bytes
from generative_rec.paths import genrec_home

log = logging.getLogger(__name__)

SOURCES = ("sasrec", "bpr", "lightgcn")
SEQUENTIAL = ("sasrec",)  # sources that score "the next item after this prefix" (can teach every position)
MODES = ("start", "fuse")


@dataclass
class CollaborativeSection:
    """``model.collaborative`` of a run config. ``source: null`` (the default) switches it all off."""

    source: str | None = field(default=None, metadata={"help": "sasrec | bpr | lightgcn | null (off)"})
    mode: str = field(default="start", metadata={
        "help": "start: the item tokens' input and output rows begin from the source's item embeddings "
                "(mapped into the LLM's hidden size); fuse: a trainable projector maps the (fixed) source "
                "embeddings into the LLM and its output is added to every item token's rows"})
    epochs: int = field(default=40, metadata={"help": "epochs of the source model (fixed: no validation is read)"})
    params: dict = field(default_factory=dict, metadata={"help": "the source's hyper-parameters (its dataclass fields)"})
    input_share: float = field(default=0.5, metadata={
        "help": "share of the collaborative part in the item tokens' input rows (the rest is the title's)"})
    output_share: float = field(default=1.0, metadata={
        "help": "share of the collaborative part in the item tokens' output rows (the rest is the title's)"})
    distill: float = field(default=0.0, metadata={
        "help": "weight of the KL term to the source's next-item distribution at every next-item target "
                "(sequential sources, single-token IDs); 0: off"})
    temperature: float = field(default=1.0, metadata={"help": "distillation temperature"})
    seed: int = 0
    cache: bool = field(default=True, metadata={"help": "reuse a fitted source from $GENREC_HOME/collaborative"})

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCES:
            raise ConfigError(f"model.collaborative.source must be one of {', '.join(SOURCES)} or null, "
                              f"not {self.source!r}")
        if self.mode not in MODES:
            raise ConfigError(f"model.collaborative.mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.distill and self.source not in SEQUENTIAL:
            raise ConfigError(f"model.collaborative.distill needs a sequential source ({', '.join(SEQUENTIAL)}); "
                              f"{self.source!r} scores users, not prefixes")
        if not 0.0 <= self.input_share <= 1.0 or not 0.0 <= self.output_share <= 1.0:
            raise ConfigError("model.collaborative.input_share / output_share must lie in [0, 1]")
        if self.distill < 0 or self.temperature <= 0:
            raise ConfigError("model.collaborative.distill must be >= 0 and temperature > 0")
        if self.source is not None:  # the source's hyper-parameters, checked by its options dataclass
            from generative_rec.evaluation.baselines import BASELINE_OPTIONS, baseline_options

            names = {f.name for f in dataclasses.fields(BASELINE_OPTIONS[self.source])}
            unknown = sorted(set(self.params) - names)
            if unknown:
                raise ConfigError(f"model.collaborative.params: {self.source} has no parameter(s) {unknown}; "
                                  f"known: {sorted(names)}")
            try:
                baseline_options(self.source, {**self.params, "epochs": self.epochs})
            except ConfigError as e:
                raise ConfigError(f"model.collaborative.params: {e}") from None

    @property
    def enabled(self) -> bool:
        return self.source is not None


@dataclass
class Collaborative:
    """A fitted source: item embeddings and, for sequential sources, a next-item teacher."""

    source: str
    item_embeddings: np.ndarray  # [num_items, d], float32
    net: Any = None  # the torch module of a sequential source (teacher), else None
    max_len: int = 0
    info: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.item_embeddings.shape[1])

    @torch.no_grad()
    def next_item_logits(self, contexts: list[np.ndarray], batch_size: int = 1024) -> torch.Tensor:
        """Scores ``[len(contexts), num_items]`` of the item that follows each context (oldest first), each
        computed exactly as the source scores a user at inference (the last ``max_len`` items,
        right-aligned), whatever the context's position in a longer sequence."""
        if self.net is None:
            raise ConfigError(f"{self.source} is not a sequential model: it has no next-item teacher")
        from generative_rec.evaluation.baselines.sasrec import last_items

        self.net.eval()
        device = next(self.net.parameters()).device
        out = []
        for lo in range(0, len(contexts), batch_size):
            h = self.net(last_items(contexts[lo: lo + batch_size], self.max_len).to(device))[:, -1]
            out.append(self.net.logits(h))
        return torch.cat(out) if out else torch.zeros(0, self.item_embeddings.shape[0])


# --------------------------------------------------------------------------- fitting
def _key(data, section: CollaborativeSection) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"source": section.source, "epochs": section.epochs, "params": section.params,
                         "seed": section.seed, "num_items": data.num_items, "v": 1}, sort_keys=True).encode())
    for s in data.train_sequences():
        h.update(np.asarray(s, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:20]


def fit_collaborative(data, section: CollaborativeSection) -> Collaborative:
    """Train ``section.source`` on the training part of ``data`` for ``section.epochs`` epochs (no
    validation) and return its item embeddings (and teacher). Cached when ``section.cache``."""
    if not section.enabled:
        raise ConfigError("model.collaborative.source is null")
    from generative_rec.evaluation.baselines import make
    from generative_rec.evaluation.baselines.common import no_validation

    key = _key(data, section)
    cache = genrec_home() / "collaborative" / f"{section.source}-{key}.pt"
    params = {**section.params, "epochs": section.epochs}
    model = make(section.source, **params)
    if section.cache and cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=False)
        info = {**saved["info"], "cached": str(cache)}
        if section.source in SEQUENTIAL:
            from generative_rec.evaluation.baselines.sasrec import SASRecNet

            net = SASRecNet(data.num_items, model.dim, model.heads, model.blocks, model.max_len, model.dropout)
            net.load_state_dict(saved["net"])
            net.eval()
            return Collaborative(section.source, saved["item_embeddings"], net, model.max_len, info)
        return Collaborative(section.source, saved["item_embeddings"], None, 0, info)

    t0 = time.time()
    log.info("collaborative source: training %s for %d epochs on the training part", section.source, section.epochs)
    model.fit(data, valid=no_validation, seed=section.seed)
    info = {"source": section.source, "params": params, "seed": section.seed, "fit_s": round(time.time() - t0, 1),
            "key": key, "final_loss": (model.fit_info.get("curve") or [(None, None)])[-1][1]}
    if section.source in SEQUENTIAL:
        net = model.net
        net.eval()
        emb = net.item.weight.detach()[1:].numpy().astype(np.float32).copy()
        out = Collaborative(section.source, emb, net, model.max_len, info)
        state = {"net": net.state_dict()}
    else:
        emb = np.asarray(model.item_factors, dtype=np.float32).copy()
        out = Collaborative(section.source, emb, None, 0, info)
        state = {}
    if section.cache:
        import io

        buf = io.BytesIO()
        torch.save({**state, "item_embeddings": emb, "info": info}, buf)
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, buf.getvalue())
    return out


def projection(d_in: int, d_out: int, seed: int = 0) -> torch.Tensor:
    """A fixed ``[d_out, d_in]`` map with orthonormal columns (d_in <= d_out): keeps the source's dot
    products (and so its item-item similarities) exactly when it carries embeddings into the LLM."""
    if d_in > d_out:
        raise ConfigError(f"collaborative embeddings ({d_in}) are wider than the LLM's hidden size ({d_out})")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_out, d_in, generator=g))
    return q


def describe(section: CollaborativeSection) -> dict[str, Any]:
    return dataclasses.asdict(section)


def cache_dir() -> Path:
    return genrec_home() / "collaborative"
