"""A bundle's catalogue, changed without retraining: add items, hide and unhide them, in numbered versions.

Version 0 is what training wrote (``index.json``, ``trie.npz``, ``catalogue.jsonl`` at the bundle's root,
never modified). Every change writes a whole new version into its own folder and then moves one pointer::

    catalogue/CURRENT.json        {"version": N}  (absent: version 0)
    catalogue/v000001/            index.json, trie.npz, catalogue.jsonl, hidden.json, version.json
    catalogue/.lock               serialises writers (flock)

The version folder is written under a temporary name and renamed, then ``CURRENT.json`` is replaced
atomically, so a process killed at any point leaves the previous version current and intact. Old versions
stay on disk: a request that started under version N can still be served by N after N+1 is current.

Catalogue rows are append-only and stable: new items get new rows at the end, hiding is a set of rows
excluded from every result (``hidden.json``), never a deletion. Item row ``i`` therefore names the same item
in every version that has it.

Which ID schemes can take new items (the model's vocabulary is fixed once it is trained and served):

- ``title``: the new ID is the item's title as plain text; a title whose ID an item already has is an error;
- ``semantic``: the new item's text embedding is coded with the index's saved codebooks (``index.npz``),
  using only code tokens and ``<d_N>`` disambiguation tokens the vocabulary already has
  (:func:`generative_rec.indexing.semantic.extend`); when none gives a free ID: "cannot encode without
  retraining";
- ``atomic``: one new token per item, whose embedding only training learns — refused;
- ``random``: digit strings drawn independently of the items and memorised in training; a new number would
  carry nothing the model could connect to the item — refused;
- ``collaborative``: codes come from the interaction graph, which a new item is not in — refused;
- ``sequential``: the number is the rank of the item's first appearance in the training interactions,
  which a new item does not have — refused.

Errors (:class:`CatalogueError`) change nothing on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generative_rec.errors import DataError, GenRecError
from generative_rec.indexing.base import ItemIndex
from generative_rec.io import atomic_dir, atomic_write_json, atomic_write_text, read_json
from generative_rec.trie import Trie, TrieError

DIR = "catalogue"
POINTER = "CURRENT.json"
FILES = ("index.json", "trie.npz", "catalogue.jsonl")

REFUSED = {
    "atomic": "atomic IDs are one new token per item, whose embedding only training learns (the vocabulary of a "
              "trained, served model is fixed)",
    "random": "random IDs are digit strings drawn independently of the items, which the model memorised one by "
              "one in training; a new random number would tell the model nothing about the new item",
    "collaborative": "collaborative IDs are codes of the item's place in the training interaction graph, and a new "
                     "item has no interactions",
    "sequential": "sequential IDs number items by their first appearance in the training interactions, and a new "
                  "item has none (the model never learned what an unseen number means)",
}


class CatalogueError(GenRecError, ValueError):
    """A catalogue change that cannot be made; nothing was written."""


@dataclass(frozen=True)
class NewItem:
    """One line of an ``--add-items`` file."""

    item_id: str
    title: str
    text: str = ""
    attributes: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The text embedded for the item (semantic IDs): ``text``, else the title and attributes."""
        if self.text:
            return self.text
        return self.title + (f". attributes: {', '.join(self.attributes)}" if self.attributes else "")


@dataclass
class Catalogue:
    """One version of a bundle's catalogue: the item index, its trie, item metadata and hidden rows."""

    version: int
    index: ItemIndex
    trie: Trie
    item_ids: list[str]
    titles: list[str]
    texts: list[str]
    attributes: list[list[str]]
    train_counts: np.ndarray
    hidden: frozenset[int] = field(default_factory=frozenset)  # catalogue rows never recommended

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


# --------------------------------------------------------------------------- versions on disk
def write_catalogue(path: Path, item_ids, titles, texts, attributes, popularity) -> None:
    """``catalogue.jsonl``: one JSON object per item, catalogue order (atomically)."""
    lines = []
    for n, iid in enumerate(item_ids):
        lines.append(json.dumps({"item_id": iid, "title": titles[n], "text": texts[n],
                                 "attributes": list(attributes[n]), "train_count": int(popularity[n])},
                                ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


def pointer_path(bundle: str | Path) -> Path:
    return Path(bundle) / DIR / POINTER


def version_dir(bundle: str | Path, version: int) -> Path:
    """Where version ``version``'s files lie (version 0: the bundle's root)."""
    return Path(bundle) if version == 0 else Path(bundle) / DIR / f"v{version:06d}"


def current_version(bundle: str | Path) -> int:
    """The version ``CURRENT.json`` names (0 when the catalogue was never changed)."""
    p = pointer_path(bundle)
    if not p.exists():
        return 0
    return int(read_json(p)["version"])


def load_catalogue(bundle: str | Path, version: int | None = None) -> Catalogue:
    """Version ``version`` (default: the current one) of a bundle's catalogue; CatalogueError if it does
    not exist, or if its index, trie and item list disagree."""
    v = current_version(bundle) if version is None else int(version)
    d = version_dir(bundle, v)
    if v < 0 or not all((d / f).exists() for f in FILES):
        raise CatalogueError(f"{bundle}: no catalogue version {v} (current: {current_version(bundle)})")
    index = ItemIndex.load(d / "index.json")
    trie = Trie.load(d / "trie.npz")
    rows = [json.loads(line) for line in (d / "catalogue.jsonl").read_text(encoding="utf-8").splitlines() if line]
    item_ids = [r["item_id"] for r in rows]
    if len(item_ids) != trie.num_items or index.item_ids != item_ids:
        raise CatalogueError(f"{d}: catalogue, item index and trie disagree about the items")
    hidden: frozenset[int] = frozenset()
    if (d / "hidden.json").exists():
        by_id = {iid: n for n, iid in enumerate(item_ids)}
        hidden = frozenset(by_id[i] for i in read_json(d / "hidden.json")["hidden"])
    return Catalogue(v, index, trie, item_ids, [r["title"] for r in rows], [r.get("text", "") for r in rows],
                     [r.get("attributes", []) for r in rows],
                     np.asarray([r.get("train_count", 0) for r in rows], dtype=np.int64), hidden)


@contextlib.contextmanager
def _writer_lock(bundle: Path) -> Iterator[None]:
    """One writer at a time per bundle (an advisory ``flock``; readers never wait)."""
    (bundle / DIR).mkdir(exist_ok=True)
    with open(bundle / DIR / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_version(bundle: str | Path, cat: Catalogue, change: str) -> int:
    """Write ``cat`` as version ``cat.version`` and make it current (the folder first, then the pointer)."""
    bundle = Path(bundle)
    with atomic_dir(version_dir(bundle, cat.version), overwrite=True) as tmp:  # a leftover of a killed write
        cat.index.save(tmp / "index.json")
        cat.trie.save(tmp / "trie.npz")
        write_catalogue(tmp / "catalogue.jsonl", cat.item_ids, cat.titles, cat.texts, cat.attributes,
                        cat.train_counts)
        atomic_write_json(tmp / "hidden.json", {"hidden": [cat.item_ids[r] for r in sorted(cat.hidden)]})
        atomic_write_json(tmp / "version.json", {"version": cat.version, "change": change, "items": cat.num_items,
                                                 "hidden": len(cat.hidden),
                                                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    atomic_write_json(pointer_path(bundle), {"version": cat.version})
    return cat.version


def _change(bundle: str | Path, make) -> Catalogue:
    """Under the writer lock: the current version, ``make(current) -> (new Catalogue, description)``, written."""
    bundle = Path(bundle)
    if not (bundle / "bundle.json").exists():
        raise CatalogueError(f"{bundle} is not a bundle (no bundle.json)")
    with _writer_lock(bundle):
        for tmp in (bundle / DIR).glob(".tmp-v*"):  # a writer killed mid-write (none runs now: we hold the lock)
            shutil.rmtree(tmp, ignore_errors=True)
        cur = load_catalogue(bundle)
        new, change = make(cur)
        write_version(bundle, new, change)
    return new


# --------------------------------------------------------------------------- hide / unhide
def _rows_of(cat: Catalogue, keys: Sequence[str]) -> list[int]:
    by_id = {iid: n for n, iid in enumerate(cat.item_ids)}
    unknown = [k for k in keys if k not in by_id]
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5]) + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise CatalogueError(f"unknown item id(s): {shown}")
    return [by_id[k] for k in keys]


def _with_hidden(cat: Catalogue, hidden: frozenset[int]) -> Catalogue:
    return Catalogue(cat.version + 1, cat.index, cat.trie, cat.item_ids, cat.titles, cat.texts, cat.attributes,
                     cat.train_counts, hidden)


def hide_items(bundle: str | Path, keys: Sequence[str]) -> Catalogue:
    """A new version in which the items ``keys`` (item ids) are never recommended nor completed."""
    keys = [str(k) for k in keys]

    def make(cur: Catalogue):
        hidden = cur.hidden | frozenset(_rows_of(cur, keys))
        if len(hidden) >= cur.num_items:
            raise CatalogueError("hiding these items would hide the whole catalogue")
        return _with_hidden(cur, hidden), f"hide {len(keys)} item(s)"

    return _change(bundle, make)


def unhide_items(bundle: str | Path, keys: Sequence[str]) -> Catalogue:
    """A new version in which the items ``keys`` can be recommended again."""
    keys = [str(k) for k in keys]

    def make(cur: Catalogue):
        return _with_hidden(cur, cur.hidden - frozenset(_rows_of(cur, keys))), f"unhide {len(keys)} item(s)"

    return _change(bundle, make)


# --------------------------------------------------------------------------- add
def read_new_items(path: str | Path) -> list[NewItem]:
    """Items of a JSONL file (``item_id``, ``title``, optional ``text``, ``attributes``); DataError names the
    line of the first malformed one or of an item id given twice."""
    items, seen = [], {}
    p = str(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError as e:
                raise DataError(f"not a JSON object ({e})", p, n) from None
            items.append(_new_item(d, p, n))
            iid = items[-1].item_id
            if iid in seen:
                raise DataError(f"item id {iid!r} appears twice (first on line {seen[iid]})", p, n)
            seen[iid] = n
    if not items:
        raise DataError("no items", p)
    return items


def _new_item(d, path: str, line: int) -> NewItem:
    if not isinstance(d, dict):
        raise DataError("not a JSON object", path, line)
    unknown = sorted(set(d) - {"item_id", "title", "text", "attributes"})
    if unknown:
        raise DataError(f"unknown field(s) {unknown} (allowed: item_id, title, text, attributes)", path, line)
    iid, title = d.get("item_id"), d.get("title")
    if isinstance(iid, int) and not isinstance(iid, bool):
        iid = str(iid)
    if not isinstance(iid, str) or not iid.strip():
        raise DataError("item_id must be a non-empty string", path, line)
    if not isinstance(title, str) or not title.strip():
        raise DataError("title must be a non-empty string", path, line)
    text, attrs = d.get("text", ""), d.get("attributes", [])
    if not isinstance(text, str):
        raise DataError("text must be a string", path, line)
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
        raise DataError("attributes must be a list of strings", path, line)
    return NewItem(iid.strip(), title.strip(), text.strip(), tuple(attrs))


def add_items(bundle: str | Path, items: Sequence[NewItem], embeddings: np.ndarray | None = None,
              tokenizer=None) -> Catalogue:
    """A new version with ``items`` appended (new rows at the end; existing rows keep their IDs).

    ``embeddings`` (semantic IDs only): the new items' vectors ``[len(items), dim]``, from the encoder the
    index used; by default they are computed with that encoder (``index.meta["embedding_source"]``).
    ``tokenizer``: the bundle's (default: loaded from ``model/``)."""
    bundle = Path(bundle)
    if not items:
        raise CatalogueError("no items to add")

    def make(cur: Catalogue):
        _check_new_ids(cur, items)
        id_texts = new_id_texts(bundle, cur, items, embeddings)
        tok = tokenizer if tokenizer is not None else _tokenizer(bundle)
        index = extended_index(cur.index, items, id_texts)
        trie = _trie(cur, index, tok)
        n = len(items)
        new = Catalogue(cur.version + 1, index, trie, cur.item_ids + [it.item_id for it in items],
                        cur.titles + [it.title for it in items], cur.texts + [it.description for it in items],
                        cur.attributes + [list(it.attributes) for it in items],
                        np.concatenate([cur.train_counts, np.zeros(n, dtype=np.int64)]), cur.hidden)
        return new, f"add {n} item(s)"

    return _change(bundle, make)


def _check_new_ids(cur: Catalogue, items: Sequence[NewItem]) -> None:
    have = set(cur.item_ids)
    seen: set[str] = set()
    for it in items:
        if it.item_id in have:
            raise CatalogueError(f"item id {it.item_id!r} is already in the catalogue")
        if it.item_id in seen:
            raise CatalogueError(f"item id {it.item_id!r} is given twice")
        seen.add(it.item_id)


def new_id_texts(bundle: Path, cur: Catalogue, items: Sequence[NewItem], embeddings: np.ndarray | None) -> list[str]:
    """The ID texts the index's scheme gives ``items``; CatalogueError where the scheme cannot."""
    scheme = cur.index.scheme
    if scheme in REFUSED:
        raise CatalogueError(f"cannot add items to a bundle with {scheme} IDs without retraining: {REFUSED[scheme]}. "
                             "Schemes that can: title, semantic (docs/catalogue.md)")
    if scheme == "title":
        from generative_rec.indexing.title import extend

        try:
            return extend(cur.index, [it.title for it in items], [it.item_id for it in items])
        except ValueError as e:
            raise CatalogueError(str(e)) from None
    if scheme == "semantic":
        return _semantic_ids(bundle, cur, items, embeddings)
    raise CatalogueError(f"the {scheme!r} ID scheme does not say how to code a new item")


def _semantic_ids(bundle: Path, cur: Catalogue, items: Sequence[NewItem], embeddings: np.ndarray | None) -> list[str]:
    from generative_rec.indexing.semantic import extend, id_text

    path = bundle / "index.npz"
    if not path.exists():
        raise CatalogueError(f"{bundle} has no saved codebooks (index.npz; bundles trained before they were saved "
                             "cannot code new items: retrain)")
    books = dict(np.load(path))
    emb = _semantic_embeddings(cur.index, items, embeddings)
    codes = extend(cur.index, emb, books)
    levels = int(cur.index.meta["levels"])
    bad = [it.item_id for it, c in zip(items, codes, strict=True) if not c]
    if bad:
        raise CatalogueError(f"cannot encode item {bad[0]!r} without retraining: every existing code token near its "
                             "embedding already names an item and no free <d_N> disambiguation token is left"
                             + (f" ({len(bad)} items in all)" if len(bad) > 1 else ""))
    return [id_text(c, levels) for c in codes]


def _semantic_embeddings(index: ItemIndex, items: Sequence[NewItem], embeddings: np.ndarray | None) -> np.ndarray:
    source, dim = index.meta.get("embedding_source", ""), index.meta.get("embedding_dim")
    if embeddings is None:
        if source not in ("minilm", "llm"):
            raise CatalogueError(f"the index's embeddings came from {source!r}, not an encoder genrec can run: pass "
                                 "the new items' vectors from the same source (--embeddings FILE.npy)")
        from generative_rec.embeddings import embed_texts

        model_path = (index.meta.get("options") or {}).get("model_path")
        embeddings = embed_texts([it.description for it in items], encoder=source, model_path=model_path)
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or len(emb) != len(items) or (dim is not None and emb.shape[1] != dim):
        raise CatalogueError(f"embeddings have shape {emb.shape}, expected ({len(items)}, {dim})")
    if not np.isfinite(emb).all():
        raise CatalogueError("embeddings contain NaN or inf")
    return emb


def extended_index(index: ItemIndex, items: Sequence[NewItem], id_texts: list[str]) -> ItemIndex:
    """``index`` with ``items`` appended (same new tokens: none is added; semantic: their codes in ``meta``)."""
    meta = json.loads(json.dumps(index.meta))
    meta["added_items"] = int(meta.get("added_items", 0)) + len(items)
    if index.scheme == "semantic":  # "<a_3><b_1><d_0>" -> [3, 1, 0]
        meta["codes"] += [[int(c) for c in re.findall(r"<[a-z]_(\d+)>", t)] for t in id_texts]
    try:
        return ItemIndex(index.scheme, index.item_ids + [it.item_id for it in items], index.id_texts + id_texts,
                         list(index.new_tokens), dict(index.token_items), meta)
    except ValueError as e:
        raise CatalogueError(str(e)) from None


def _tokenizer(bundle: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundle / "model")


def _trie(cur: Catalogue, index: ItemIndex, tokenizer) -> Trie:
    """The trie over the old items' token ids (read back from the old trie) and the new items' (tokenised)."""
    n = cur.num_items
    added = ItemIndex(index.scheme, index.item_ids[n:], index.id_texts[n:], list(index.new_tokens))
    seqs = [cur.trie.sequence(i) for i in range(n)] + added.token_ids(tokenizer)
    for i, s in enumerate(seqs[n:], start=n):
        unknown = [t for t in s if t == tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else []
        if unknown or not s:
            raise CatalogueError(f"item {index.item_ids[i]!r}: its ID {index.id_texts[i]!r} does not tokenise "
                                 "into known tokens")
    try:
        return Trie.build(seqs)
    except TrieError as e:
        raise CatalogueError(f"the new IDs do not form a valid trie with the catalogue: {_named(e, index)}") from None


def _named(e: TrieError, index: ItemIndex) -> str:
    """A trie error with item rows replaced by item ids and ID texts."""
    m = re.match(r"items (\d+) and (\d+) have (.*?):", str(e))
    if not m:
        return str(e)
    a, b = int(m.group(1)), int(m.group(2))
    return (f"items {index.item_ids[a]!r} ({index.id_texts[a]}) and {index.item_ids[b]!r} ({index.id_texts[b]}) "
            f"have {m.group(3)} after tokenisation")


def describe(bundle: str | Path) -> dict:
    """The current version in numbers (``genrec catalogue show``)."""
    cat = load_catalogue(bundle)
    meta = read_json(version_dir(bundle, cat.version) / "version.json") if cat.version else {"change": "trained"}
    return {"version": cat.version, "scheme": cat.index.scheme, "items": cat.num_items, "hidden": len(cat.hidden),
            "added_items": int(cat.index.meta.get("added_items", 0)), "last_change": meta.get("change"),
            "hidden_ids": [cat.item_ids[r] for r in sorted(cat.hidden)][:20]}
