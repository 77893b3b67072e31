"""Amazon review reader: a sample file in the 2014 layout, both field layouts, metadata, errors; and the real
2014 Musical Instruments 5-core file (the ``shared_data`` group: ``pytest -m shared_data``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import AMAZON, write_amazon_sample, write_text

from generative_rec.data.amazon import (
    AmazonSpec,
    holdout_mask,
    items_from_reviews,
    read_amazon,
    read_metadata,
    read_reviews,
)
from generative_rec.errors import DataError

REAL = AMAZON  # the shared data folder beside the checkout (../shared/data, or $GENREC_SHARED_DATA)


@pytest.fixture(scope="module")
def real():
    assert REAL.exists(), (
        f"the real Amazon Musical Instruments file is missing: expected {REAL} "
        "(../shared/data beside the checkout, or set GENREC_SHARED_DATA); this test does not skip"
    )
    return read_amazon(AmazonSpec(path=str(REAL)))


def rec(user, item, t, rating=5.0, summary="fine", review="A fine thing.", **extra):
    return {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": t, "summary": summary,
            "reviewText": review, **extra}


def write(path: Path, lines: list) -> Path:
    return write_text(path, "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")


# --------------------------------------------------------------------------- the real file
@pytest.mark.shared_data
def test_real_file_counts(real):
    inter, items = real
    assert len(inter) == 10261
    assert len(set(inter.users)) == 1429
    assert len(set(inter.items)) == 900 == len(items)
    assert set(items.ids) == set(inter.items)
    assert inter.ratings is not None and set(np.unique(inter.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter.timestamps.min() >= 1.09e9 and inter.timestamps.max() <= 1.41e9  # 2004-09 .. 2014-07
    assert set(inter.texts) == {"review", "summary"}
    assert inter.texts["summary"][0] == "good"
    assert inter.lines is not None and inter.lines[0] == 1


@pytest.mark.shared_data
def test_real_file_titles_unique_and_readable(real):
    _, items = real
    assert all(t.strip() for t in items.titles)
    assert len({t.lower() for t in items.titles}) == len(items)
    # 9 items are only ever some user's validation/test item: nothing may describe them (leak-free).
    inter, _ = real
    train_items = {i for i, held in zip(inter.items, holdout_mask(inter, 2), strict=True) if not held}
    fallback = {i for i, t in zip(items.ids, items.titles, strict=True) if t == f"Item {i}"}
    assert fallback == set(items.ids) - train_items and len(fallback) == 9
    assert sum("(" in t for t in items.titles) < 20  # ASIN suffix only to break rare ties
    trained = [n for n, i in enumerate(items.ids) if i not in fallback]
    assert all(items.fields["description"][n].startswith("Reviewers mention: ") for n in trained)
    assert all(items.fields["keywords"][n] for n in trained)
    assert all(items.fields["description"][items.ids.index(i)] == "" for i in fallback)


@pytest.mark.shared_data
def test_real_holdout_is_two_per_user(real):
    inter, _ = real
    mask = holdout_mask(inter, 2)
    assert int(mask.sum()) == 2 * 1429  # 5-core, no repeated (user, item) pairs


# --------------------------------------------------------------------------- the sample shipped with the tests
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return read_amazon(AmazonSpec(path=str(write_amazon_sample(tmp_path_factory.mktemp("amz") / "r.json.gz"))))


def test_sample_counts_titles_and_holdout(sample):
    inter, items = sample
    assert (len(inter), len(set(inter.users)), len(items)) == (811, 120, 40)
    assert set(items.ids) == set(inter.items) and set(inter.texts) == {"review", "summary"}
    assert len({t.lower() for t in items.titles}) == len(items) and all(t.strip() for t in items.titles)
    assert int(holdout_mask(inter, 2).sum()) == 2 * 120
    # every product's own name words reach its mined title (the brand or the product kind)
    assert sum(any(w in t.lower() for w in ("strap", "capo", "tuner", "filter", "pedal", "cable", "stand",
                                              "monitor", "mic", "bench", "cover", "light", "slide", "picks"))
               for t in items.titles) >= 20


# --------------------------------------------------------------------------- both field layouts
def test_2014_layout_plain_and_gz(tmp_path):
    rows = [rec("u1", "A", 3, helpful=[0, 1], reviewerName="x", reviewTime="01 1, 2014"), rec("u1", "B", 1)]
    for name in ("r.json", "r.json.gz"):
        inter = read_reviews(write(tmp_path / name, rows))
        assert inter.users == ["u1", "u1"] and inter.items == ["A", "B"]
        assert list(inter.timestamps) == [3.0, 1.0] and list(inter.ratings) == [5.0, 5.0]
        assert inter.texts["review"] == ["A fine thing.", "A fine thing."]


def test_2018_layout_extra_fields_and_missing_text(tmp_path):
    r2018 = {"overall": 4.0, "verified": True, "reviewTime": "02 6, 2016", "reviewerID": "u9", "asin": "X1",
             "style": {"Color:": " Black"}, "reviewerName": "n", "summary": "Solid tuner", "unixReviewTime": 1454716800,
             "vote": "1,234", "image": ["https://example.invalid/a.jpg"]}  # no reviewText
    inter = read_reviews(write(tmp_path / "r.json", [r2018]))
    assert inter.items == ["X1"] and inter.ratings[0] == 4.0 and inter.timestamps[0] == 1454716800
    assert inter.texts == {"review": [""], "summary": ["Solid tuner"]}


def test_python_literal_lines(tmp_path):
    p = write(tmp_path / "r.json", ["{'reviewerID': 'u1', 'asin': 'A', 'overall': 5.0, 'unixReviewTime': 7, "
                                     "'summary': 'ok', 'reviewText': \"it's fine\"}"])
    inter = read_reviews(p)
    assert inter.items == ["A"] and inter.texts["review"] == ["it's fine"]


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("lines", "line", "words"), [
    ([rec("u", "A", 1), '{"reviewerID": "u", "asin": '], 2, "malformed JSON"),
    ([rec("u", "A", 1), {"asin": "A", "overall": 5, "unixReviewTime": 1}], 2, "'reviewerID'"),
    ([rec("u", "A", 1), rec("u", "", 2)], 2, "'asin'"),
    ([rec("u", "A", "yesterday")], 1, "unixReviewTime 'yesterday' is not a number"),
    ([rec("u", "A", True)], 1, "is not a number"),
    ([rec("u", "A", 1, rating="five")], 1, "overall 'five'"),
    ([{"reviewerID": "u", "asin": "A", "overall": 5}], 1, "'unixReviewTime'"),
    (["", "[1, 2]"], 2, "expected a JSON object"),
])
def test_bad_lines_name_file_line_problem(tmp_path, lines, line, words):
    p = write(tmp_path / "bad.json", lines)
    with pytest.raises(DataError) as e:
        read_reviews(p)
    assert e.value.path == str(p) and e.value.line == line
    assert words in e.value.problem
    assert f"{p}:{line}: " in str(e.value)


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(DataError, match="file is empty"):
        read_reviews(empty)
    with pytest.raises(DataError, match="no reviews"):
        read_reviews(write(tmp_path / "blank.json.gz", ["", "  "]))
    with pytest.raises(DataError, match="file not found"):
        read_reviews(tmp_path / "nope.json")


def test_truncated_gzip_is_a_data_error(tmp_path):
    p = write(tmp_path / "r.json.gz", [rec("u", "A", i) for i in range(200)])
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DataError, match="cannot read file"):
        read_reviews(p)


# --------------------------------------------------------------------------- leak-free item text
def _three_users(tmp_path: Path, secret_user: str = "u1") -> Path:
    rows = []
    for u in ("u1", "u2", "u3"):
        for t, item in enumerate(["A", "B", "C", "D"]):
            summary = "zanzibar tremolo" if (u == secret_user and item == "D") else f"{item.lower()}string winder"
            rows.append(rec(u, item, t, summary=summary, review=f"The {item.lower()}string winder is handy."))
    return write(tmp_path / "r.json", rows)


def test_item_text_leaves_out_each_users_last_two(tmp_path):
    p = _three_users(tmp_path)
    _, items = read_amazon(AmazonSpec(path=str(p)))
    blob = " ".join(items.titles + items.fields["description"] + items.fields["keywords"]).lower()
    assert "zanzibar" not in blob  # u1's last review (item D) is a test target
    # Items C and D are every user's validation / test items here, so nothing trains their text.
    assert items.titles[items.ids.index("D")] == "Item D"
    # The check can see a leak: with the hold-out off, the secret phrase is the best one for D.
    _, leaky = read_amazon(AmazonSpec(path=str(p), item_text_holdout=0))
    assert "zanzibar" in " ".join(leaky.fields["description"]).lower()


def test_holdout_mask_order_ties_and_repeats():
    from generative_rec.data.tables import Interactions

    inter = Interactions(["u"] * 5, ["A", "B", "C", "B", "D"], np.array([1.0, 2.0, 2.0, 5.0, 0.0]))
    # chronological: D(0) A(1) B(2) C(2, input order after B) [B(5) repeats B]; last two: B, C
    assert holdout_mask(inter, 2).tolist() == [False, True, True, True, False]
    assert holdout_mask(inter, 0).tolist() == [False] * 5


def test_titles_are_unique_even_for_identical_reviews(tmp_path):
    rows = [rec(f"u{k}", item, k, summary="Bass strings", review="Bass strings.") for item in "XYZ" for k in range(4)]
    inter = read_reviews(write(tmp_path / "r.json", rows))
    items = items_from_reviews(inter)
    assert len(set(items.titles)) == 3
    assert all(t.endswith(f"({i})") for t, i in zip(items.titles, items.ids, strict=True))


# --------------------------------------------------------------------------- metadata
def test_metadata_2014_and_2018(tmp_path):
    reviews = write(tmp_path / "r.json", [rec("u", a, t) for t, a in enumerate(["A", "B", "C"])])
    m2014 = write(tmp_path / "meta14.json", [
        "{'asin': 'A', 'title': 'Elixir Nanoweb Strings', 'categories': [['Musical Instruments', "
        "'Instrument Accessories', 'Strings']], 'description': 'Coated &amp; bright', 'brand': 'Elixir'}",
    ])
    m2018 = write(tmp_path / "meta18.json.gz", [
        {"asin": "B", "title": "<span>Snark SN-5</span> Tuner", "category": ["Musical Instruments", "Tuners"],
         "description": ["Clip-on", "tuner"], "brand": "Snark"},
        {"asin": "B", "title": "duplicate row"},
    ])
    meta = read_metadata(m2014)
    assert meta["A"] == {"title": "Elixir Nanoweb Strings", "categories": "Instrument Accessories | Strings",
                         "description": "Coated & bright", "brand": "Elixir"}
    assert read_metadata(m2018)["B"]["title"] == "Snark SN-5 Tuner"
    _, items = read_amazon(AmazonSpec(path=str(reviews), meta_path=str(m2018)))
    assert items.titles[items.ids.index("B")] == "Snark SN-5 Tuner"
    assert items.fields["description"][items.ids.index("B")] == "Clip-on tuner"
    assert items.fields["categories"][items.ids.index("B")] == "Tuners"
    assert items.titles[items.ids.index("A")]  # no metadata: a mined (or fallback) title
    with pytest.raises(DataError, match="missing field 'asin'"):
        read_metadata(write(tmp_path / "m.json", [{"title": "x"}]))


# --------------------------------------------------------------------------- through prepare
def test_prepare_amazon_source(tmp_path):
    from generative_rec.data.prepare import PrepareConfig, prepare
    from generative_rec.io import read_json

    p = _three_users(tmp_path)
    out = prepare(PrepareConfig(source="amazon", amazon={"path": str(p)}, output=str(tmp_path / "out")))
    meta = read_json(out / "meta.json")
    assert (meta["num_users"], meta["num_items"], meta["num_interactions"]) == (3, 4, 12)
    assert meta["user_text_fields"] == ["review", "summary"]
