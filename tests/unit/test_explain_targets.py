"""Explanation targets: the cited items, the phrasing, faithfulness by construction, review sentences."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from generative_rec.explain.metrics import MOVIELENS_GENRE_ALIASES, Catalogue, faithfulness
from generative_rec.explain.targets import (
    WITH_ATTRIBUTES,
    history_target,
    pick_cited,
    review_target,
    split_sentences,
)

TITLES = ["Heat (1995)", "Casino (1995)", "Toy Story (1995)", "Godfather, The (1972)", "Clueless (1995)",
          "Seven (Se7en) (1995)", "Fargo (1996)"]
ATTRS = [["Action", "Crime", "Thriller"], ["Crime", "Drama"], ["Animation", "Children's", "Comedy"],
         ["Action", "Crime", "Drama"], ["Comedy", "Romance"], ["Crime", "Thriller"], ["Crime", "Drama", "Thriller"]]
CAT = Catalogue(TITLES, ATTRS, aliases=MOVIELENS_GENRE_ALIASES)


def test_pick_cited_by_jaccard_then_recency():
    # rec Fargo {Crime, Drama, Thriller}: Casino 2/3, Seven 2/3, Heat 2/4, Godfather 2/4, Toy Story 0
    cited, shared = pick_cited([1, 5, 0, 2], 6, ATTRS)
    assert cited == [1, 5]  # Casino and Seven tie at 2/3; both share Crime with Fargo
    assert shared == ["Crime"]
    # a tie broken by recency: Seven later than Casino -> Seven first, then Casino if it still shares
    assert pick_cited([1, 5], 6, ATTRS, max_cited=1) == ([5], ["Crime", "Thriller"])
    assert pick_cited([5, 1], 6, ATTRS, max_cited=1) == ([1], ["Crime", "Drama"])


def test_pick_cited_embeddings_break_attribute_ties():
    emb = np.eye(len(TITLES))
    emb[1] = emb[6]  # Casino's embedding equals Fargo's
    assert pick_cited([1, 5], 6, ATTRS, embeddings=emb, max_cited=1)[0] == [1]


def test_pick_cited_second_item_only_when_it_shares():
    cited, shared = pick_cited([2, 1], 3, ATTRS)  # Godfather: Casino shares Crime+Drama, Toy Story nothing
    assert cited == [1] and shared == ["Crime", "Drama"]
    assert pick_cited([2, 4], 1, ATTRS) == ([4], [])  # nothing shared: most recent, no attribute
    assert pick_cited([], 1, ATTRS) == ([], [])
    assert pick_cited([1], 1, ATTRS) == ([], [])  # the recommended item itself is never cited


def test_history_target_text_and_seeded_phrasing():
    t = history_target([0, 1, 2], 3, TITLES, ATTRS, rng=0)
    assert t.cited == (0, 1) and t.shared_attributes == ("Crime",)
    assert "Heat (1995) and Casino (1995)" in t.text and "The Godfather (1972)" in t.text
    assert "crime" in t.text
    assert t == history_target([0, 1, 2], 3, TITLES, ATTRS, rng=0)  # same seed, same sentence
    texts = {history_target([0, 1, 2], 3, TITLES, ATTRS, rng=s).text for s in range(40)}
    assert len(texts) == len(WITH_ATTRIBUTES)
    one = history_target([4, 0], 1, TITLES, ATTRS, rng=random.Random(3), max_cited=1)
    assert one.cited == (0,) and one.shared_attributes == ("Crime",)
    plain = history_target([2], 1, TITLES, ATTRS)
    assert plain.shared_attributes == () and "Toy Story (1995)" in plain.text
    assert history_target([], 1, TITLES, ATTRS).text == "You may like Casino (1995)."


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_targets_are_faithful_by_construction(data):
    rec = data.draw(st.integers(0, len(TITLES) - 1))
    hist = data.draw(st.lists(st.integers(0, len(TITLES) - 1).filter(lambda h: h != rec), min_size=1, max_size=6))
    t = history_target(hist, rec, TITLES, ATTRS, rng=data.draw(st.integers(0, 10**6)))
    f = faithfulness(t.text, hist, rec, CAT)
    assert not f.hallucinated, (t, f)
    assert set(t.cited) == set(f.cited_history) and f.names_recommended
    assert {a.lower() for a in t.shared_attributes} == {a.lower() for a in f.claimed_attributes}


# --------------------------------------------------------------------------- review sentences
REVIEW = ("The product does exactly as it should and is quite affordable.I did not realize it was double "
          "screened until it arrived. The double cloth filter blocks the pops and lets the voice through!")


def test_split_sentences():
    assert split_sentences(REVIEW) == [
        "The product does exactly as it should and is quite affordable.",
        "I did not realize it was double screened until it arrived.",
        "The double cloth filter blocks the pops and lets the voice through!",
    ]
    assert split_sentences("Costs $3.50 each.\nGood") == ["Costs $3.50 each.", "Good"]


def test_review_target_prefers_a_feature_sentence_then_the_summary():
    assert review_target(REVIEW, "good", features=["filters", "pop"]) == \
        "The double cloth filter blocks the pops and lets the voice through!"
    assert review_target(REVIEW, "No more pops when I record", features=["strap"]) == "No more pops when I record"
    assert review_target(REVIEW, "good") == "The product does exactly as it should and is quite affordable."


def test_review_target_length_limits_and_empty():
    long = " ".join(["word"] * 40) + "."
    assert review_target(long, "ok", max_words=20) == " ".join(["word"] * 20)
    assert review_target("", "Five stars") == "Five stars"
    assert review_target("", "") is None
