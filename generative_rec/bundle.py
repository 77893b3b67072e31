"""The bundle: the one artifact that crosses from training to evaluation, serving and batch generation.

Layout::

    bundle.json       manifest (format version, base model, scheme, inference template, prompt alignment, counts)
    model/            merged HF model + tokenizer (what vLLM and HF load)
    adapter/          the peft LoRA adapter (servable with --enable-lora when the scheme adds no tokens)
    index.json        the item index (scheme, item ids, ID texts, new tokens, scheme metadata)
    index.npz         arrays the scheme needs to code new items (semantic: normaliser and codebooks)
    trie.npz          trie over the ID token ids; item i = catalogue row i
    catalogue.jsonl   item_id, title, text, attributes, training popularity — catalogue order
    catalogue/        later catalogue versions (items added or hidden without retraining; catalogue.py)
    templates.json    every template the run used; which one inference uses
    config.yaml       the run configuration
    metrics.json      validation / test metrics recorded by training and `genrec eval`

Serving reads nothing else, so it cannot disagree with training about prompts or IDs. ``index.json``,
``trie.npz`` and ``catalogue.jsonl`` are catalogue version 0; ``Bundle(path)`` loads the current version
(``generative_rec.catalogue``), whose rows extend version 0's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from generative_rec.errors import ConfigError, GenRecError
from generative_rec.indexing.base import ItemIndex
from generative_rec.io import atomic_write_json, atomic_write_text, read_json
from generative_rec.keys import lookup_keys
from generative_rec.prompts import Renderer, Template
from generative_rec.trie import Trie

FORMAT_VERSION = 1
REQUIRED = ("bundle.json", "model", "index.json", "trie.npz", "catalogue.jsonl", "templates.json")


class BundleError(GenRecError):
    pass


def write_bundle_files(out: Path, *, manifest: dict, index: ItemIndex, trie: Trie, templates: Sequence[Template],
                       inference_template: str, catalogue: dict, config_yaml: str, metrics: dict | None = None) -> None:
    """Write everything except ``model/`` and ``adapter/`` (the trainer saves those) into ``out``."""
    from dataclasses import asdict

    from generative_rec.catalogue import write_catalogue

    out.mkdir(parents=True, exist_ok=True)
    index.save(out / "index.json")
    index.save_arrays(out / "index.npz")
    trie.save(out / "trie.npz")
    write_catalogue(out / "catalogue.jsonl", **catalogue)
    atomic_write_json(out / "templates.json", {"inference": inference_template,
                                              "templates": [asdict(t) for t in templates]})
    atomic_write_text(out / "config.yaml", config_yaml)
    atomic_write_json(out / "metrics.json", metrics or {})
    atomic_write_json(out / "bundle.json", {"format_version": FORMAT_VERSION, **manifest})


class Bundle:
    """A trained bundle on disk. Loading is cheap; the model itself is loaded by the engine."""

    def __init__(self, path: str | Path, catalogue_version: int | None = None):
        self.path = Path(path)
        missing = [f for f in REQUIRED if not (self.path / f).exists()]
        if missing:
            raise BundleError(f"{self.path} is not a complete bundle (missing: {', '.join(missing)})")
        self.manifest = read_json(self.path / "bundle.json")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{self.path}: bundle format {self.manifest.get('format_version')} "
                              f"is not {FORMAT_VERSION}")
        t = read_json(self.path / "templates.json")
        self.templates = {f"{d['task']}/{d['name']}": Template(**d) for d in t["templates"]}
        self.inference_key = t["inference"]
        if self.inference_key not in self.templates:
            raise BundleError(f"inference template {self.inference_key!r} is not among the bundle's templates")
        self._set_catalogue(self._load_catalogue(catalogue_version))

    def _load_catalogue(self, version: int | None):
        from generative_rec.catalogue import CatalogueError, load_catalogue

        try:
            return load_catalogue(self.path, version)
        except CatalogueError as e:  # the consistency check: catalogue, item index and trie must agree
            raise BundleError(str(e)) from None

    def _set_catalogue(self, cat) -> None:
        self.catalogue_version: int = cat.version
        self.index, self.trie = cat.index, cat.trie
        self.item_ids, self.titles, self.texts = cat.item_ids, cat.titles, cat.texts
        self.attributes, self.train_counts = cat.attributes, cat.train_counts
        self.hidden: frozenset[int] = cat.hidden  # rows never recommended (hidden with `genrec catalogue hide`)
        for name in ("renderer", "_by_id", "_by_title"):  # cached from the previous catalogue
            self.__dict__.pop(name, None)

    def with_catalogue(self, version: int | None = None) -> Bundle:
        """A new Bundle for catalogue version ``version`` (default: the current one) that shares this one's
        manifest, templates and loaded tokenizer; this one is left unchanged (a server swaps references)."""
        new = copy.copy(self)
        new._set_catalogue(self._load_catalogue(version))
        return new

    # ------------------------------------------------------------------ parts
    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def domain(self) -> str:
        return self.manifest.get("domain", "item")

    @property
    def metrics(self) -> dict:
        p = self.path / "metrics.json"
        return read_json(p) if p.exists() else {}

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.model_dir)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer(self.tokenizer, [self.trie.sequence(i) for i in range(self.num_items)], self.titles,
                        self.domain, align=self.prompt_align, filler=self.manifest.get("prompt_filler"))

    @property
    def prompt_align(self) -> int:
        """Next-item prompts are padded to a multiple of this many tokens (0: off; ``prompts.align``)."""
        return int(self.manifest.get("prompt_align") or 0)

    def template(self, key: str | None = None) -> Template:
        key = key or self.inference_key
        if key not in self.templates:
            if f"next_item/{key}" in self.templates:
                return self.templates[f"next_item/{key}"]
            raise ConfigError(f"unknown template {key!r}; the bundle has {sorted(self.templates)}")
        return self.templates[key]

    def prompt_ids(self, history: Sequence[int], template: str | None = None) -> list[int]:
        return self.renderer.prompt_ids(self.template(template), history)

    def check_tokenizer(self) -> None:
        """Re-tokenise every ID and compare with the trie: the tokenizer must not have drifted."""
        ids = self.index.token_ids(self.tokenizer)
        for i, seq in enumerate(ids):
            if self.trie.item_of(seq) != i:
                raise BundleError(f"the tokenizer in {self.model_dir} does not reproduce the ID of item "
                                  f"{self.item_ids[i]!r} ({self.index.id_texts[i]!r})")

    # ------------------------------------------------------------------ items
    @cached_property
    def _by_id(self) -> dict[str, int]:
        return {iid: n for n, iid in enumerate(self.item_ids)}

    @cached_property
    def _by_title(self) -> dict[str, int]:
        m: dict[str, int] = {}
        for n, t in enumerate(self.titles):
            m.setdefault(t, n)
        return m

    def lookup(self, keys: Sequence[str], by_title: bool = True) -> list[int]:
        """Catalogue rows of item ids (or exact titles); UnknownItemError lists every unknown key."""
        return lookup_keys(keys, self._by_id, self._by_title if by_title else None)


def load_bundle_model(bundle: Bundle, dtype=None):
    """The bundle's merged model (``bundle.model_dir``) in eval mode, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(bundle.model_dir, dtype=dtype).to(device)
    model.eval()
    return model
