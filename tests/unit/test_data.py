"""Readers, validation errors (file, line, problem), chronological order with input-order ties, the split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generative_rec.data import PrepareConfig, RecData, prepare
from generative_rec.data.readers import AtomicSpec, read_atomic
from generative_rec.errors import DataError


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def table_cfg(tmp: Path, inter: Path, items: Path | None = None, **kw) -> PrepareConfig:
    table = {"path": str(inter), "user": "u", "item": "i", "timestamp": "t"}
    if items:
        table.update(items_path=str(items), item_id="i", title="title")
    return PrepareConfig(source="table", output=str(tmp / "out"), table=table, **kw)


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_atomic_reader_typed_header(tmp_path):
    inter = write(tmp_path / "d.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                        "1\t10\t4\t100\n1\t11\t5\t90\n2\t10\t3\t50\n")
    item = write(tmp_path / "d.item", "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                                      "10\tHeat\tAction Crime\n11\tCasino\tDrama\n")
    inter_t, items = read_atomic(AtomicSpec(inter=str(inter), item=str(item)))
    assert inter_t.users == ["1", "1", "2"] and inter_t.items == ["10", "11", "10"]
    assert inter_t.timestamps.tolist() == [100, 90, 50] and inter_t.ratings.tolist() == [4, 5, 3]
    assert items.ids == ["10", "11"] and items.titles == ["Heat", "Casino"]
    assert items.fields["class"] == ["Action Crime", "Drama"]


@pytest.mark.parametrize("header,row,problem,line", [
    ("user_id\titem_id\ttimestamp:float\n", "1\t2\t3\n", "has no ':type'", 1),
    ("user_id:token\titem_id:token\ttimestamp:float\n", "1\t2\tyesterday\n", "'yesterday' is not a number", 2),
    ("user_id:token\titem_id:token\ttimestamp:float\n", "1\t2\n", "expected 3 tab-separated fields", 2),
    ("user_id:token\titem_id:token\n", "1\t2\n", "missing column 'timestamp'", 1),
    ("user_id:token\titem_id:token\ttimestamp:blob\n", "1\t2\t3\n", "unknown type 'blob'", 1),
])
def test_atomic_errors_name_file_line_problem(tmp_path, header, row, problem, line):
    p = write(tmp_path / "bad.inter", header + row)
    with pytest.raises(DataError) as e:
        read_atomic(AtomicSpec(inter=str(p)))
    assert problem in str(e.value) and e.value.line == line and e.value.path == str(p)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="file is empty"):
        read_atomic(AtomicSpec(inter=str(write(tmp_path / "e.inter", ""))))
    with pytest.raises(DataError, match="file not found"):
        read_atomic(AtomicSpec(inter=str(tmp_path / "nope.inter")))


@pytest.mark.parametrize("content,problem,line", [
    ('{"u": "a", "i": "x", "t": 1}\n{"u": "a", "i": "y", "t": \n', "malformed JSON", 2),
    ('{"u": "a", "i": "x", "t": 1}\n{"u": "a", "t": 2}\n', "missing column 'i'", 2),
    ('{"u": "a", "i": "x", "t": "noon"}\n', "'noon' is not a number", 1),
    ('[1, 2, 3]\n', "expected a JSON object", 1),
])
def test_table_errors(tmp_path, content, problem, line):
    p = write(tmp_path / "inter.jsonl", content)
    with pytest.raises(DataError) as e:
        prepare(table_cfg(tmp_path, p))
    assert problem in str(e.value) and e.value.line == line
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_item_without_metadata_is_an_error_naming_the_line(tmp_path):
    inter = write(tmp_path / "inter.csv", "u,i,t\na,x,1\na,y,2\na,z,3\na,x2,4\n")
    items = write(tmp_path / "items.csv", "i,title\nx,X\ny,Y\nx2,X2\n")
    with pytest.raises(DataError) as e:
        prepare(table_cfg(tmp_path, inter, items))
    assert "'z' has no metadata" in str(e.value) and e.value.line == 4 and e.value.path == str(inter)
    assert not (tmp_path / "out").exists()
    out = prepare(table_cfg(tmp_path, inter, items, drop_unknown_items=True, overwrite=True))
    assert RecData(out).num_items == 3


def test_chronological_ties_keep_input_order_not_item_id(tmp_path):
    # same timestamp for b, a, c (input order); item ids sort the other way round
    rows = [{"u": "1", "i": "z", "t": 5}, {"u": "1", "i": "b", "t": 7}, {"u": "1", "i": "a", "t": 7},
            {"u": "1", "i": "c", "t": 7}, {"u": "1", "i": "y", "t": 1}]
    out = prepare(table_cfg(tmp_path, write(tmp_path / "i.jsonl", jsonl(rows))))
    d = RecData(out)
    assert [d.item_ids[i] for i in d.sequences[0]] == ["y", "z", "b", "a", "c"]


def test_leave_one_out_split(tmp_path):
    rows = [{"u": "1", "i": f"i{k}", "t": k} for k in range(6)] + [{"u": "2", "i": "i9", "t": 1}]
    d = RecData(prepare(table_cfg(tmp_path, write(tmp_path / "i.jsonl", jsonl(rows)))))
    assert d.num_users == 1  # user 2 has fewer than 3 interactions
    name = lambda xs: [d.item_ids[i] for i in xs]  # noqa: E731
    assert name(d.train_sequence(0)) == ["i0", "i1", "i2", "i3"]
    (v,) = d.examples("valid")
    (t,) = d.examples("test")
    assert name(v.history) == ["i0", "i1", "i2", "i3"] and d.item_ids[v.target] == "i4"
    assert name(t.history) == ["i0", "i1", "i2", "i3", "i4"] and d.item_ids[t.target] == "i5"
    # popularity comes from the training part only
    assert d.train_counts[d.item_to_idx["i4"]] == 0 and d.train_counts[d.item_to_idx["i0"]] == 1


def test_kcore_and_max_history(tmp_path):
    rows = []
    for u in range(4):
        rows += [{"u": f"u{u}", "i": f"i{k}", "t": k} for k in range(5)]
    rows.append({"u": "u0", "i": "rare", "t": 10})
    d = RecData(prepare(table_cfg(tmp_path, write(tmp_path / "i.jsonl", jsonl(rows)), kcore=2, max_history=4)))
    assert "rare" not in d.item_ids
    assert all(len(s) == 4 for s in d.sequences)
    assert [d.item_ids[i] for i in d.sequences[0]] == ["i1", "i2", "i3", "i4"]


def test_output_exists_needs_overwrite(tmp_path, tiny_data):
    with pytest.raises(FileExistsError):
        prepare(PrepareConfig(source="ml-100k", output=str(tiny_data)))


def test_synthetic_fixture(tiny_data):
    d = RecData(tiny_data)
    assert d.num_users == 30 and d.num_items <= 40
    assert all(len(a) >= 1 for a in d.attributes)
    assert d.meta["attribute_field"] == "genres"
    assert np.all([len(s) >= 3 for s in d.sequences])
