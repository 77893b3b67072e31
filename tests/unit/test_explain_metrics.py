"""Explanation measures: hand-computed BLEU / ROUGE-L, title matching rules, faithfulness, aggregates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generative_rec.explain.metrics import (
    MOVIELENS_GENRE_ALIASES,
    Catalogue,
    corpus_bleu,
    display_title,
    evaluate_explanations,
    explanation_report,
    faithfulness,
    lcs_length,
    rouge_l,
    sentence_bleu,
    tokenize,
)


def test_tokenizer():
    assert tokenize("Great cable, works! Don't") == ["great", "cable", ",", "works", "!", "don't"]
    assert tokenize("Sci-Fi (1995)") == ["sci", "-", "fi", "(", "1995", ")"]


# --------------------------------------------------------------------------- BLEU
# hyp "the cat sat on the mat" vs ref "the cat is on the mat" (6 tokens each, so BP = 1):
#   1-grams: the x2, cat, on, mat match; sat does not          -> 5/6
#   2-grams: the-cat, on-the, the-mat of 5                     -> 3/5
#   3-grams: on-the-mat of 4                                   -> 1/4
#   4-grams: none of 3                                         -> 0/3
HYP, REF = "the cat sat on the mat", "the cat is on the mat"


def test_bleu_hand_computed_smoothings():
    assert corpus_bleu([HYP], [REF]).score == 0.0  # a zero 4-gram precision, no smoothing
    b = corpus_bleu([HYP], [REF], smoothing="floor")  # p4 = 0.1/3: (5/6 * 3/5 * 1/4 * 1/30)^(1/4) = 240^(-1/4)
    assert b.precisions == pytest.approx((5 / 6, 3 / 5, 1 / 4, 0.1 / 3))
    assert b.score == pytest.approx(240 ** -0.25) and b.brevity_penalty == 1.0
    # add1 (n >= 2): 5/6 * 4/6 * 2/5 * 1/4 = 1/18
    assert corpus_bleu([HYP], [REF], smoothing="add1").score == pytest.approx(18 ** -0.25)
    # exp: the first zero order gets 1 / (2 * 3): 5/6 * 3/5 * 1/4 * 1/6 = 1/48
    assert corpus_bleu([HYP], [REF], smoothing="exp").score == pytest.approx(48 ** -0.25)
    assert corpus_bleu([HYP], [REF], max_n=2).score == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError, match="unknown smoothing"):
        corpus_bleu([HYP], [REF], smoothing="magic")


def test_bleu_brevity_penalty_and_closest_reference():
    # c = 2, r = 6: BP = exp(1 - 6/2) = e^-2; both precisions are 1
    assert corpus_bleu(["the cat"], [REF], max_n=2).score == pytest.approx(math.exp(-2))
    # hypothesis of 4 tokens, references of 3 and 5: the tie goes to the shorter, so c > r and BP = 1
    b = corpus_bleu(["a b c d"], [["a b c", "a b c d e"]], max_n=1)
    assert b.ref_len == 3 and b.brevity_penalty == 1.0 and b.score == 1.0


def test_bleu_matches_the_published_papineni_nltk_example():
    # The example of Papineni et al. used in NLTK's documentation: sentence_bleu = 0.5045666840058485
    # (modified precisions 17/18, 10/17, 7/16, 4/15, BP = 1) and, with a second pair, corpus_bleu =
    # 0.5920778868801042. Lower-casing changes no match here.
    h1 = "It is a guide to action which ensures that the military always obeys the commands of the party"
    r1 = "It is a guide to action that ensures that the military will forever heed Party commands"
    r2 = "It is the guiding principle which guarantees the military forces always being under the command of the Party"
    r3 = "It is the practical guide for the army always to heed the directions of the party"
    b = corpus_bleu([h1], [[r1, r2, r3]])
    assert b.precisions == pytest.approx((17 / 18, 10 / 17, 7 / 16, 4 / 15))
    assert b.score == pytest.approx(0.5045666840058485, abs=1e-12)
    h2 = "he read the book because he was interested in world history"
    r4 = "he was interested in world history because he read the book"
    assert corpus_bleu([h1, h2], [[r1, r2, r3], [r4]]).score == pytest.approx(0.5920778868801042, abs=1e-12)


def test_bleu_edges():
    assert corpus_bleu(["a b"], ["a b"]).score == 0.0  # no 3-/4-grams at all
    assert corpus_bleu([""], ["a b c d"], smoothing="floor").score == 0.0
    assert sentence_bleu("a b c d e", "a b c d e") == pytest.approx(1.0)
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])


# --------------------------------------------------------------------------- ROUGE-L
def test_rouge_l_hand_computed():
    assert lcs_length(HYP.split(), REF.split()) == 5
    r = rouge_l(HYP, REF)  # LCS 5: P = R = F = 5/6
    assert (r.precision, r.recall, r.f) == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    # Lin (2004): "police killed the gunman" vs "police kill the gunman": LCS 3 of 4 -> 3/4;
    # "the gunman kill police": LCS "the gunman" = 2 -> 1/2
    assert rouge_l("police kill the gunman", "police killed the gunman").f == pytest.approx(0.75)
    assert rouge_l("the gunman kill police", "police killed the gunman").f == pytest.approx(0.5)
    # lengths differ: hyp a b c d e, ref a c e: LCS 3, P = 3/5, R = 1, F = 2 * 0.6 / 1.6 = 0.75
    r = rouge_l("a b c d e", "a c e")
    assert (r.precision, r.recall, r.f) == pytest.approx((0.6, 1.0, 0.75))
    assert rouge_l("a b c d e", ["x y", "a c e"]).f == pytest.approx(0.75)  # best reference
    assert rouge_l("", "a").f == 0.0


@given(st.lists(st.sampled_from("abcde"), max_size=12), st.lists(st.sampled_from("abcde"), max_size=12))
@settings(max_examples=150, deadline=None)
def test_overlap_measures_are_bounded_and_symmetric(a, b):
    ha, hb = " ".join(a), " ".join(b)
    fa = rouge_l(ha, hb).f
    assert 0.0 <= fa <= 1.0 and fa == pytest.approx(rouge_l(hb, ha).f)
    if b:
        assert 0.0 <= corpus_bleu([ha], [hb], smoothing="floor").score <= 1.0 + 1e-12
    if len(a) >= 4:
        assert corpus_bleu([ha], [ha]).score == pytest.approx(1.0)


# --------------------------------------------------------------------------- titles
TITLES = [
    "Heat (1995)",  # 0
    "Casino (1995)",  # 1
    "It (1990)",  # 2
    "Godfather, The (1972)",  # 3
    "Godfather: Part II, The (1974)",  # 4
    "Toy Story (1995)",  # 5
    "Star Wars (1977)",  # 6
    "Titanic (1997)",  # 7
    "Sabrina (1954)",  # 8
    "Sabrina (1995)",  # 9
    "Mr. Holland's Opus (1995)",  # 10
    "Postino, Il (1994)",  # 11
]
ATTRS = [
    ["Action", "Crime", "Thriller"], ["Crime", "Drama"], ["Horror"], ["Action", "Crime", "Drama"],
    ["Action", "Crime", "Drama"], ["Animation", "Children's", "Comedy"], ["Action", "Sci-Fi", "War"],
    ["Drama", "Romance"], ["Comedy", "Romance"], ["Comedy", "Romance"], ["Drama"], ["Drama", "Romance"],
]
CAT = Catalogue(TITLES, ATTRS, aliases=MOVIELENS_GENRE_ALIASES)


def found(text: str) -> list[set[int]]:
    return [items for _, items, _ in CAT.find_titles(text)]


def test_display_title():
    assert display_title("Godfather, The (1972)") == "The Godfather (1972)"
    assert display_title("Enfer, L' (1994)") == "L'Enfer (1994)"
    assert display_title("Horseman on the Roof, The (Hussard sur le toit, Le) (1995)") == \
        "The Horseman on the Roof (Hussard sur le toit, Le) (1995)"
    assert display_title("Paris, Texas (1984)") == "Paris, Texas (1984)"


@pytest.mark.parametrize("text", [
    "You liked The Godfather.", "you liked the godfather (1972)", "Godfather, The (1972) again",
    "like 'The Godfather'", "like “Godfather”", "Much like Godfather, it is long.",
])
def test_title_matching_is_robust_to_case_punctuation_year_and_article(text):
    assert found(text) == [{3}]


@pytest.mark.parametrize(("text", "expected"), [
    ("It was heated and it felt like the heat of the day.", []),  # tiny titles in ordinary words
    ("It is a thriller. Heat is a crime film.", []),  # one-word titles at a sentence start
    ("Fans of Heat and \"It\" agree.", [{0}, {2}]),  # capitalised mid-sentence, or quoted
    ("Heat (1995) opens the list.", [{0}]),  # the year makes even a sentence-initial one count
    ("If you liked toy story, try this.", [{5}]),  # two words: any case
    ("the godfather part ii beats The Godfather", [{4}, {3}]),  # longest match first
    ("the godfather part ii beats the godfather", [{4}]),  # one word besides "the", lower case: no title
    ("Sabrina is charming; you saw Sabrina.", [{8, 9}]),  # ambiguous: every candidate kept
    ("Mr Hollands Opus and il postino", [{10}, {11}]),  # punctuation and apostrophes ignored
    ("Watch the star wars saga", [{6}]),
])
def test_title_matching_rules(text, expected):
    assert found(text) == expected


# --------------------------------------------------------------------------- faithfulness
def test_faithful_explanation():
    f = faithfulness("Because you watched Heat (1995) and The Godfather, Casino is another crime drama.",
                     history=[0, 3, 5], recommended=1, catalogue=CAT)
    assert f.cited_history == (0, 3) and f.names_recommended and f.cites_history
    assert f.claimed_attributes == ("Crime", "Drama") and not f.hallucinated


def test_invented_title_is_a_hallucinated_item():
    f = faithfulness("Because you loved Titanic, try Casino.", history=[0, 3], recommended=1, catalogue=CAT)
    assert f.hallucinated_items == ("Titanic",) and f.item_hallucination and f.hallucinated
    assert not f.cites_history


def test_genre_the_item_does_not_have_is_a_hallucinated_attribute():
    f = faithfulness("Like Heat (1995), which you watched, Casino is a hilarious comedy.", [0], 1, CAT)
    assert f.cites_history and f.hallucinated_attributes == ("Comedy",) and f.attribute_hallucination
    assert not f.item_hallucination


def test_attribute_of_a_cited_history_item_is_allowed_but_not_of_an_uncited_one():
    # Thriller: Heat has it, Casino does not
    assert not faithfulness("Heat (1995) was a thriller, and so you may like Casino.", [0], 1, CAT).hallucinated
    f = faithfulness("You may like Casino, a thriller.", [0], 1, CAT)  # Heat is in the history but not cited
    assert f.hallucinated_attributes == ("Thriller",)


def test_attribute_forms_aliases_and_title_spans():
    assert CAT.find_attributes("crime dramas, comedies and science fiction for kids") == \
        ["Crime", "Drama", "Comedy", "Sci-Fi", "Children's"]
    # "Wars" inside the title Star Wars is no claim of the War genre
    f = faithfulness("Since you watched Star Wars, you may like Toy Story.", [6], 5, CAT)
    assert f.claimed_attributes == () and f.cited_history == (6,) and f.names_recommended
    assert "unknown" not in Catalogue(["A b (1990)"], [["unknown"]]).find_attributes("an unknown film")


def test_ambiguous_title_resolves_to_the_history():
    assert faithfulness("You watched Sabrina, so here is Casino.", [9], 1, CAT).cited_history == (9,)


def test_report_rates_and_overlap():
    exps = [
        "Because you watched Heat (1995), Casino is another crime movie.",  # faithful, cites
        "Because you loved Titanic, try Casino.",  # invented item
        "Casino is a comedy.",  # invented attribute, no citation
        "Casino is good.",  # nothing claimed, no citation
    ]
    refs = ["Because you watched Heat (1995), Casino is another crime movie.", None, "casino is a drama .", None]
    rep = evaluate_explanations(exps, [[0]] * 4, [1] * 4, CAT, references=refs)
    assert rep["n"] == 4 and rep["n_with_reference"] == 2
    assert rep["hallucination_rate"] == 0.5
    assert rep["item_hallucination_rate"] == 0.25 and rep["attribute_hallucination_rate"] == 0.25
    assert rep["citation_rate"] == 0.25
    # ROUGE-L: the first pair is identical (F = 1); "casino is a comedy ." vs "casino is a drama .": 4/5
    assert rep["rouge_l_f"] == pytest.approx((1 + 0.8) / 2)
    assert 0 < rep["bleu4"] < 1 and rep["bleu1"] == pytest.approx(corpus_bleu(
        [exps[0], exps[2]], [refs[0], refs[2]], max_n=1).score)
    assert set(explanation_report([])) == {"n"}


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_citing_history_with_its_own_attributes_is_always_faithful(data):
    hist = data.draw(st.lists(st.integers(0, len(TITLES) - 1), min_size=1, max_size=4, unique=True))
    rec = data.draw(st.integers(0, len(TITLES) - 1).filter(lambda r: r not in hist))
    cite = data.draw(st.sampled_from(hist))
    attr = data.draw(st.sampled_from(ATTRS[cite]))
    text = f"Because you watched {display_title(TITLES[cite])}, a {attr.lower()} movie, try this one."
    f = faithfulness(text, hist, rec, CAT)
    assert cite in f.cited_history and not f.hallucinated
