"""The item index: item <-> ID text <-> token ids, plus the registry of ID schemes.

Every scheme is one small module exposing ``build(data: RecData, cfg: IndexConfig, options) -> ItemIndex``,
registered with ``@register("name", OptionsClass)``: ``OptionsClass`` is a dataclass whose fields (defaults
and ``metadata={"help": ...}``) are the scheme's ``index.options``. ``cfg.options`` stays a plain mapping
(YAML, ``index.json`` metadata) and is converted by :func:`scheme_options` with the strict rules of the run
config: an unknown key or a wrong type is a :class:`ConfigError` naming it; a scheme without options
accepts only ``{}``. ``genrec index --help`` and ``docs/options.md`` list every scheme's options.
An :class:`ItemIndex` is plain data (JSON on disk) so a bundle can carry it to serving unchanged.

Contract every scheme keeps:

- every catalogue item gets exactly one ID, no two items share one, and (after tokenisation) no ID is a
  prefix of another, so the trie can tell when an ID is complete;
- whatever depends on interactions is computed from the *training part only* (``RecData.train_sequence``),
  never from validation or test targets.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generative_rec.errors import ConfigError
from generative_rec.io import atomic_write_json, read_json
from generative_rec.options import NoOptions, from_dict

if TYPE_CHECKING:
    from generative_rec.data import RecData
    from generative_rec.trie import Trie


@dataclass
class IndexConfig:
    scheme: str = field(default="atomic", metadata={"help": "ID scheme: " + "atomic | sequential | random | title | collaborative | semantic"})
    seed: int = 0
    options: dict = field(default_factory=dict, metadata={
        "help": "scheme-specific options (per scheme: genrec index --help, docs/options.md)"})

    def __post_init__(self) -> None:
        scheme_options(self.scheme, self.options)  # unknown scheme, unknown option or wrong type: ConfigError


@dataclass
class ItemIndex:
    """Item IDs of one scheme. ``item_ids[i]`` (catalogue order of the data set) has ID ``id_texts[i]``."""

    scheme: str
    item_ids: list[str]
    id_texts: list[str]
    new_tokens: list[str] = field(default_factory=list)  # tokens the scheme adds to the vocabulary
    # For each new token, the items whose text initialises its embedding (atomic: the item itself;
    # semantic: every item sharing that code). Empty: initialise from the mean embedding.
    token_items: dict[str, list[int]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    # Numpy arrays the scheme needs to code new items later (semantic: normaliser and codebooks). Not in
    # index.json: a bundle saves them beside it as ``index.npz`` (:meth:`save_arrays`).
    arrays: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.id_texts):
            raise ValueError("item_ids and id_texts differ in length")
        if len(set(self.id_texts)) != len(self.id_texts):
            seen: dict[str, int] = {}
            for n, t in enumerate(self.id_texts):
                if t in seen:
                    raise ValueError(f"items {self.item_ids[seen[t]]!r} and {self.item_ids[n]!r} share the ID {t!r}")
                seen[t] = n

    def __len__(self) -> int:
        return len(self.item_ids)

    def token_ids(self, tokenizer) -> list[list[int]]:
        """Each item's ID as token ids, tokenised on its own (never merged with surrounding text). IDs made of
        new tokens are those tokens; text IDs (titles) are plain text, never an added or special token."""
        if not self.new_tokens:
            from generative_rec.plain_text import plain_ids

            return [plain_ids(tokenizer, t) for t in self.id_texts]
        enc = tokenizer(self.id_texts, add_special_tokens=False)["input_ids"]
        return [list(e) for e in enc]

    def build_trie(self, tokenizer) -> Trie:
        from generative_rec.trie import Trie

        return Trie.build(self.token_ids(tokenizer))

    def save(self, path: str | Path) -> None:
        """``index.json`` (every field but ``arrays``)."""
        d = asdict(self)
        d.pop("arrays")
        atomic_write_json(path, d)

    def save_arrays(self, path: str | Path) -> None:
        """``arrays`` as one ``.npz`` (atomically); nothing is written when there are none."""
        if self.arrays:
            import io

            import numpy as np

            from generative_rec.io import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, **self.arrays)
            atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> ItemIndex:
        d = read_json(path)
        return cls(**d)

    def describe(self) -> str:
        ex = ", ".join(f"{i}->{t}" for i, t in list(zip(self.item_ids, self.id_texts, strict=True))[:3])
        return f"{self.scheme} index: {len(self)} items, {len(self.new_tokens)} new tokens ({ex}, ...)"


Builder = Callable[["RecData", IndexConfig], ItemIndex]
SCHEMES: dict[str, Builder] = {}
SCHEME_OPTIONS: dict[str, type] = {}  # scheme -> its options dataclass


def register(name: str, options: type = NoOptions) -> Callable[[Callable], Callable]:
    """Decorator: list ``build(data, cfg, options)`` as scheme ``name`` whose options are the dataclass
    ``options``. ``SCHEMES[name](data, cfg)`` converts ``cfg.options`` first (:func:`scheme_options`)."""

    def deco(fn: Callable[[RecData, IndexConfig, Any], ItemIndex]) -> Callable:
        @functools.wraps(fn)
        def builder(data: RecData, cfg: IndexConfig) -> ItemIndex:
            return fn(data, cfg, scheme_options(name, cfg.options))

        SCHEMES[name] = builder
        SCHEME_OPTIONS[name] = options
        return fn

    return deco


def scheme_options(scheme: str, options: dict | None) -> Any:
    """``options`` (a mapping, e.g. ``index.options`` of a run config) as scheme ``scheme``'s typed options
    dataclass, with its defaults for missing keys. Unknown scheme, unknown key or wrong type: ConfigError.
    (The schemes are registered: importing this module first runs the package's ``__init__``.)"""
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown ID scheme {scheme!r}; available: {', '.join(sorted(SCHEMES))}")
    cls = SCHEME_OPTIONS[scheme]
    if cls is NoOptions and options:
        raise ConfigError(f"index.options: scheme {scheme!r} takes no options, got {sorted(options, key=str)}")
    try:
        return from_dict(cls, options, where="index.options")
    except ConfigError as e:
        raise ConfigError(f"{e} (scheme {scheme!r})") from None


def build_index(data: RecData, cfg: IndexConfig) -> ItemIndex:
    """Build the item index of ``cfg.scheme`` for ``data`` (records the build time in ``meta``)."""
    scheme_options(cfg.scheme, cfg.options)  # unknown scheme / option: ConfigError (also if changed after init)
    t0 = time.perf_counter()
    index = SCHEMES[cfg.scheme](data, cfg)
    index.meta.setdefault("build_seconds", round(time.perf_counter() - t0, 4))
    index.meta.setdefault("seed", cfg.seed)
    index.meta.setdefault("options", json.loads(json.dumps(cfg.options)))
    return index


def first_appearance_order(data: RecData) -> list[int]:
    """Items ordered by their first appearance in the *training part* (global time order, ties in input
    order); items never seen in training follow in catalogue order. Uses no validation/test target."""
    events = []
    for u, seq in enumerate(data.train_sequences()):
        ts = data.timestamps[u]
        for pos, item in enumerate(seq):
            events.append((ts[pos], u, pos, int(item)))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    order = list(dict.fromkeys(e[3] for e in events))
    seen = set(order)
    order.extend(i for i in range(data.num_items) if i not in seen)
    return order
