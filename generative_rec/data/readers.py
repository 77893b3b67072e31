"""Readers: RecBole atomic files and plain JSONL / CSV / TSV tables with a column mapping.

Every reader returns :class:`~generative_rec.data.tables.Interactions` (and, where item metadata exists,
:class:`~generative_rec.data.tables.Items`) and raises :class:`~generative_rec.errors.DataError` naming
the file, the line and the problem for anything malformed.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generative_rec.data.tables import Interactions, Items
from generative_rec.errors import DataError

ATOMIC_TYPES = {"token", "token_seq", "float", "float_seq"}


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fb:
        return fb.read(2) == b"\x1f\x8b"


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, gzipped or not (told by its magic bytes), decoded one line at a time so
    that a byte that is not UTF-8 is reported with its line; a truncated or corrupt gzip stream is a
    DataError too. Line endings are kept (as ``open(newline="")`` would)."""
    lineno = 0
    try:
        with gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})",
                                    str(path), lineno) from None
    except (OSError, EOFError, zlib.error) as e:  # bad gzip stream, truncated file
        raise DataError(f"cannot read file ({type(e).__name__}: {e})", str(path), lineno + 1) from None


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", str(p))
    if p.is_dir():
        raise DataError("is a folder, expected a file", str(p))
    if p.stat().st_size == 0:
        raise DataError("file is empty", str(p))
    return p


def parse_float(value: str, what: str, path: str, line: int) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{what} {value!r} is not a number", path, line) from None
    if not math.isfinite(x):
        raise DataError(f"{what} {value!r} is not a finite number", path, line)
    return x


# --------------------------------------------------------------------------- RecBole atomic files
def read_atomic_table(path: str | os.PathLike) -> tuple[dict[str, str], Iterator[tuple[int, dict[str, str]]]]:
    """Read a RecBole atomic file: a tab-separated header of ``name:type`` then rows.

    Returns ``(types, rows)``: the field types by name and an iterator of ``(line_number, row)``.
    """
    p = _check_file(path)
    f = text_lines(p)
    header = next(f, "").rstrip("\r\n")
    if not header.strip():
        f.close()
        raise DataError("empty header line (expected tab-separated name:type fields)", str(p), 1)
    names, types = [], {}
    for col in header.split("\t"):
        if ":" not in col:
            f.close()
            raise DataError(f"header field {col!r} has no ':type' (RecBole atomic format is name:type)", str(p), 1)
        name, typ = col.rsplit(":", 1)
        if typ not in ATOMIC_TYPES:
            f.close()
            raise DataError(f"header field {col!r}: unknown type {typ!r}, expected one of {sorted(ATOMIC_TYPES)}", str(p), 1)
        names.append(name)
        types[name] = typ

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        with closing(f):
            for lineno, raw in enumerate(f, start=2):
                raw = raw.rstrip("\r\n")
                if not raw:
                    continue
                cells = raw.split("\t")
                if len(cells) != len(names):
                    raise DataError(f"expected {len(names)} tab-separated fields, found {len(cells)}", str(p), lineno)
                yield lineno, dict(zip(names, cells, strict=True))

    return types, rows()


@dataclass
class AtomicSpec:
    """How to read a RecBole atomic data set. Paths are ``{dir}/{name}.inter`` / ``.item``."""

    inter: str
    item: str | None = None
    user_field: str = "user_id"
    item_field: str = "item_id"
    time_field: str = "timestamp"
    rating_field: str | None = "rating"
    title_field: str | None = None  # default: the first token_seq field of the .item file
    text_fields: list[str] = field(default_factory=list)  # default: every other item field


def read_atomic(spec: AtomicSpec) -> tuple[Interactions, Items | None]:
    types, rows = read_atomic_table(spec.inter)
    for need in (spec.user_field, spec.item_field, spec.time_field):
        if need not in types:
            raise DataError(f"missing column {need!r} (header has {sorted(types)})", spec.inter, 1)
    rating_field = spec.rating_field if spec.rating_field in types else None
    users, items, times, ratings, lines = [], [], [], [], []
    for lineno, row in rows:
        lines.append(lineno)
        u, i = row[spec.user_field].strip(), row[spec.item_field].strip()
        if not u or not i:
            raise DataError("empty user or item id", spec.inter, lineno)
        users.append(u)
        items.append(i)
        times.append(parse_float(row[spec.time_field], "timestamp", spec.inter, lineno))
        if rating_field:
            ratings.append(parse_float(row[rating_field], "rating", spec.inter, lineno))
    if not users:
        raise DataError("no interactions (header only)", spec.inter)
    inter = Interactions(
        users, items, np.asarray(times, dtype=np.float64),
        np.asarray(ratings, dtype=np.float64) if rating_field else None, source=str(spec.inter),
        lines=np.asarray(lines, dtype=np.int64),
    )
    if spec.item is None:
        return inter, None

    types, rows = read_atomic_table(spec.item)
    if spec.item_field not in types:
        raise DataError(f"missing column {spec.item_field!r} (header has {sorted(types)})", spec.item, 1)
    others = [n for n in types if n != spec.item_field]
    title_field = spec.title_field or next((n for n in others if types[n] == "token_seq"), None)
    if title_field is None or title_field not in types:
        raise DataError(f"no title field (set title_field; header has {sorted(types)})", spec.item, 1)
    text_fields = spec.text_fields or [n for n in others if n != title_field]
    ids, titles, fields = [], [], {k: [] for k in text_fields}
    seen: dict[str, int] = {}
    for lineno, row in rows:
        iid = row[spec.item_field].strip()
        if not iid:
            raise DataError("empty item id", spec.item, lineno)
        if iid in seen:
            raise DataError(f"item id {iid!r} appears twice (first on line {seen[iid]})", spec.item, lineno)
        seen[iid] = lineno
        ids.append(iid)
        titles.append(row[title_field].strip())
        for k in text_fields:
            fields[k].append(row[k].strip())
    if not ids:
        raise DataError("no items (header only)", spec.item)
    return inter, Items(ids, titles, fields, source=str(spec.item))


# --------------------------------------------------------------------------- JSONL / CSV / TSV tables
@dataclass
class TableSpec:
    """A plain table of interactions (``.jsonl``, ``.json`` lines, ``.csv``, ``.tsv``; optionally ``.gz``).

    The mapping names the columns; ``item_*`` describe an optional separate item table.
    """

    path: str
    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    rating: str | None = None
    texts: dict[str, str] = field(default_factory=dict)  # our name -> column (e.g. review: reviewText)
    items_path: str | None = None
    item_id: str | None = None  # item id column of the item table (default: same as ``item``)
    title: str = "title"
    item_fields: list[str] = field(default_factory=list)


def iter_json_lines(p: Path, fallback: Callable[[str], dict | None] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` from a JSON-lines file, gzipped or not (told by its magic bytes);
    blank lines are skipped. ``fallback(raw)`` may parse a line that is not JSON (``None``: not parsable)."""
    for lineno, raw in enumerate(text_lines(p), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            rec = fallback(raw) if fallback is not None else None
            if rec is None:
                raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", str(p), lineno) from None
        except RecursionError:
            raise DataError("malformed JSON (nested too deeply)", str(p), lineno) from None
        if not isinstance(rec, dict):
            raise DataError(f"expected a JSON object, found {type(rec).__name__}", str(p), lineno)
        yield lineno, rec


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` from a JSONL / CSV / TSV file (``.gz`` allowed)."""
    p = _check_file(path)
    suffixes = [s.lower() for s in p.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".json", ".ndjson"):
        yield from iter_json_lines(p)
    elif kind in (".csv", ".tsv", ".txt"):
        delim = "\t" if kind in (".tsv", ".txt") else ","
        with closing(text_lines(p)) as f:
            reader = csv.DictReader(f, delimiter=delim)
            try:
                if not reader.fieldnames:
                    raise DataError("no header row", str(p), 1)
                for rec in reader:
                    if None in rec:
                        raise DataError(f"more fields than the header's {len(reader.fieldnames)}", str(p), reader.line_num)
                    yield reader.line_num, rec
            except csv.Error as e:
                raise DataError(f"malformed CSV: {e}", str(p), reader.line_num) from None
    else:
        raise DataError(f"unsupported file type {''.join(p.suffixes)!r} (expected .jsonl, .csv or .tsv, optionally .gz)", str(p))


def _field(rec: dict, col: str, path: str, line: int, required: bool = True):
    if col not in rec or rec[col] is None or (isinstance(rec[col], str) and not rec[col].strip()):
        if required:
            raise DataError(f"missing column {col!r}", path, line)
        return None
    return rec[col]


def read_table(spec: TableSpec) -> tuple[Interactions, Items | None]:
    users, items, times, ratings, lines = [], [], [], [], []
    texts: dict[str, list[str]] = {k: [] for k in spec.texts}
    path = str(spec.path)
    for lineno, rec in iter_records(path):
        lines.append(lineno)
        users.append(str(_field(rec, spec.user, path, lineno)).strip())
        items.append(str(_field(rec, spec.item, path, lineno)).strip())
        times.append(parse_float(_field(rec, spec.timestamp, path, lineno), "timestamp", path, lineno))
        if spec.rating:
            ratings.append(parse_float(_field(rec, spec.rating, path, lineno), "rating", path, lineno))
        for ours, col in spec.texts.items():
            v = _field(rec, col, path, lineno, required=False)
            texts[ours].append("" if v is None else str(v).strip())
    if not users:
        raise DataError("no interactions", path)
    inter = Interactions(
        users, items, np.asarray(times, dtype=np.float64),
        np.asarray(ratings, dtype=np.float64) if spec.rating else None, texts, source=path,
        lines=np.asarray(lines, dtype=np.int64),
    )
    if not spec.items_path:
        return inter, None
    ipath, id_col = str(spec.items_path), spec.item_id or spec.item
    ids, titles, fields = [], [], {k: [] for k in spec.item_fields}
    seen: dict[str, int] = {}
    for lineno, rec in iter_records(ipath):
        iid = str(_field(rec, id_col, ipath, lineno)).strip()
        if iid in seen:
            raise DataError(f"item id {iid!r} appears twice (first on line {seen[iid]})", ipath, lineno)
        seen[iid] = lineno
        ids.append(iid)
        titles.append(str(_field(rec, spec.title, ipath, lineno)).strip())
        for k in spec.item_fields:
            v = _field(rec, k, ipath, lineno, required=False)
            fields[k].append("" if v is None else (" ".join(map(str, v)) if isinstance(v, list) else str(v)).strip())
    if not ids:
        raise DataError("no items", ipath)
    return inter, Items(ids, titles, fields, source=ipath)
