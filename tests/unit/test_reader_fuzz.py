"""Malformed input files, generated rather than hand-picked: every reader either reads the file or stops with
a DataError that names the file (and the line where there is one), never another exception, and
``prepare`` writes nothing when it stops.

Each case starts from a valid file of the source's format and applies one hypothesis-drawn corruption:
truncation at any byte, a line replaced by arbitrary text or bytes (bad UTF-8 included), a field with the
wrong type, a huge field, a duplicated header, a deleted header, an empty file.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generative_rec.data import PrepareConfig, prepare
from generative_rec.errors import DataError

ROWS = [(f"u{u}", f"i{(u * 3 + t) % 7}", 100 + 10 * t + u) for u in range(5) for t in range(5)]


def atomic_files() -> dict[str, bytes]:
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t4\t{t}\n" for u, i, t in ROWS)
    item = "item_id:token\tmovie_title:token_seq\tclass:token_seq\n" + "".join(
        f"i{n}\tTitle {n}\tDrama\n" for n in range(7))
    return {"d.inter": inter.encode(), "d.item": item.encode()}


def jsonl_files() -> dict[str, bytes]:
    return {"inter.jsonl": "".join(json.dumps({"u": u, "i": i, "t": t}) + "\n" for u, i, t in ROWS).encode()}


def csv_files() -> dict[str, bytes]:
    inter = "u,i,t\n" + "".join(f"{u},{i},{t}\n" for u, i, t in ROWS)
    items = "i,title\n" + "".join(f"i{n},Title {n}\n" for n in range(7))
    return {"inter.csv": inter.encode(), "items.csv": items.encode()}


def amazon_files() -> dict[str, bytes]:
    return {"reviews.json": "".join(json.dumps({
        "reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": t, "summary": f"nice {i}",
        "reviewText": f"The {i} works for me."}) + "\n" for u, i, t in ROWS).encode()}


SOURCES = {  # name -> (files, PrepareConfig fields for a folder)
    "atomic": (atomic_files, lambda d: {"source": "atomic", "atomic": {"inter": str(d / "d.inter"),
                                                                       "item": str(d / "d.item")}}),
    "jsonl": (jsonl_files, lambda d: {"source": "table", "table": {"path": str(d / "inter.jsonl"), "user": "u",
                                                                   "item": "i", "timestamp": "t"}}),
    "csv": (csv_files, lambda d: {"source": "table", "table": {
        "path": str(d / "inter.csv"), "user": "u", "item": "i", "timestamp": "t", "items_path": str(d / "items.csv"),
        "item_id": "i", "title": "title"}}),
    "amazon": (amazon_files, lambda d: {"source": "amazon", "amazon": {"path": str(d / "reviews.json")}}),
}


@st.composite
def corruptions(draw):
    """(kind, function bytes -> bytes) on one file."""
    kind = draw(st.sampled_from(["truncate", "replace_line", "bad_bytes", "wrong_type", "huge_field",
                                 "duplicate_header", "drop_header", "empty", "blank_lines"]))
    line_pick = draw(st.integers(0, 10_000))
    junk = draw(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
    raw = draw(st.binary(min_size=1, max_size=12))
    cut = draw(st.floats(0.0, 1.0))
    wrong = draw(st.sampled_from(["yesterday", "", "NaN", "1e999", "[]", "{}", "true", "-"]))

    def apply(data: bytes) -> bytes:
        lines = data.split(b"\n")
        n = line_pick % max(len(lines) - 1, 1)
        if kind == "truncate":
            return data[: int(len(data) * cut)]
        if kind == "replace_line":
            lines[n] = junk.encode("utf-8", "surrogatepass")
        elif kind == "bad_bytes":
            lines[n] = lines[n][: len(lines[n]) // 2] + raw + lines[n][len(lines[n]) // 2:]
        elif kind == "wrong_type":
            s = lines[n].decode("utf-8", "replace")
            for num in sorted({w for w in s.replace("\t", " ").replace(",", " ").replace(":", " ").split()
                               if w.strip('"{}').isdigit()}, key=len, reverse=True)[:1]:
                s = s.replace(num.strip('"{}'), wrong, 1)
            lines[n] = s.encode()
        elif kind == "huge_field":
            lines[n] = lines[n] + b"x" * 200_000
        elif kind == "duplicate_header":
            lines.insert(1, lines[0])
        elif kind == "drop_header":
            lines = lines[1:]
        elif kind == "empty":
            return b""
        elif kind == "blank_lines":
            lines.insert(n, b"   ")
        return b"\n".join(lines)

    return kind, apply


@pytest.mark.parametrize("source", sorted(SOURCES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=corruptions(), which=st.integers(0, 1), gz=st.booleans())
def test_malformed_file_is_read_or_named_never_a_traceback(tmp_path_factory, source, case, which, gz):
    kind, apply = case
    folder = tmp_path_factory.mktemp(source)
    make, cfg_of = SOURCES[source]
    files = make()
    target = sorted(files)[which % len(files)]
    files[target] = apply(files[target])
    for name, data in files.items():
        (folder / name).write_bytes(data)
    fields = cfg_of(folder)
    if gz and source in ("jsonl", "amazon"):  # the gzip path reads the same records
        name = target
        (folder / f"{name}.gz").write_bytes(gzip.compress(files[name]))
        key = "table" if source == "jsonl" else "amazon"
        fields[key]["path"] = str(folder / f"{name}.gz")
        target = f"{name}.gz"
    out = folder / "prepared"
    try:
        prepare(PrepareConfig(output=str(out), **fields))
    except DataError as e:
        assert e.path is not None and Path(e.path).name in set(files) | {target}, (kind, str(e))
        assert "Traceback" not in str(e)
        assert not out.exists(), f"{kind}: {out} was written although prepare stopped: {e}"
        return
    assert (out / "meta.json").exists(), kind  # read: the result is a complete prepared folder
