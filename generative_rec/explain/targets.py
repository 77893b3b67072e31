"""Ground-truth explanation targets for training and evaluation.

- :func:`history_target` — for data without reviews (MovieLens): a templated, *verifiable* sentence that
  cites the 1–2 history items most similar to the recommended item and the attributes all of them share,
  e.g. "Because you watched Heat (1995) and Casino (1995), you may like The Godfather (1972), another
  crime and drama movie." Every claim is true by construction, so the target passes
  :func:`~generative_rec.explain.metrics.faithfulness` (tested).
- :func:`review_target` — for data with reviews (P5 / PETER protocol): one length-limited sentence of the
  user's own review of the item, preferring one that mentions an item feature, else the summary.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from generative_rec.explain.metrics import display_title

# --------------------------------------------------------------------------- templated targets (MovieLens)
# Slots: {cited} {rec} {verb} {noun} {nouns} {attrs} {a_attrs} ("a crime" / "an action"),
# {attrs_noun_n} ("crime movies" for several cited items, "a crime movie" for one).
WITH_ATTRIBUTES = (
    "Because you {verb} {cited}, you may like {rec}, another {attrs} {noun}.",
    "{rec} is {a_attrs} {noun}, like {cited}, which you {verb}.",
    "Like {cited}, which you {verb}, {rec} is {a_attrs} {noun}.",
    "Recommended because you {verb} {cited}: {attrs_noun_n} like {rec}.",
)
WITHOUT_ATTRIBUTES = (
    "Because you recently {verb} {cited}, you may also like {rec}.",
    "You {verb} {cited}, so {rec} could be a good next {noun}.",
)


@dataclass(frozen=True)
class ExplanationTarget:
    """A target sentence and what it claims: the cited history items and the shared attributes."""

    text: str
    cited: tuple[int, ...]
    shared_attributes: tuple[str, ...]


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    d = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y) / d if d else 0.0


def pick_cited(history: Sequence[int], recommended: int, attributes: Sequence[Sequence[str]],
               embeddings: np.ndarray | None = None, max_cited: int = 2) -> tuple[list[int], list[str]]:
    """The history items to cite and the attributes of ``recommended`` they all share.

    Ranking: attribute Jaccard with the recommended item, then embedding cosine (if given), then recency
    (later in ``history`` first). The best item is cited; a further one only while the shared set stays
    non-empty. Attributes keep the recommended item's order. With no shared attribute at all, the top
    item is cited with no attribute.
    """
    rec_attrs = [a for a in attributes[recommended] if a.lower() != "unknown"]
    rec_set = {a.lower() for a in rec_attrs}
    last_pos = {int(h): p for p, h in enumerate(history) if int(h) != recommended}  # latest position wins

    def key(h: int) -> tuple[float, float, int]:
        jac = _jaccard({a.lower() for a in attributes[h]}, rec_set)
        cos = _cosine(embeddings[h], embeddings[recommended]) if embeddings is not None else 0.0
        return (jac, cos, last_pos[h])

    ranked = sorted(last_pos, key=key, reverse=True)
    if not ranked:
        return [], []
    cited, shared = [ranked[0]], rec_set & {a.lower() for a in attributes[ranked[0]]}
    for h in ranked[1:]:
        if len(cited) >= max_cited or not shared:
            break
        both = shared & {a.lower() for a in attributes[h]}
        if both:
            cited.append(h)
            shared = both
    cited.sort(key=lambda h: last_pos[h])  # cite in the order they were consumed
    return cited, [a for a in rec_attrs if a.lower() in shared]


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def history_target(history: Sequence[int], recommended: int, titles: Sequence[str],
                   attributes: Sequence[Sequence[str]], rng: random.Random | int = 0,
                   embeddings: np.ndarray | None = None, max_cited: int = 2, max_attributes: int = 3,
                   noun: str = "movie", verb: str = "watched") -> ExplanationTarget:
    """A templated explanation for recommending ``recommended`` after ``history`` (catalogue indices).

    The phrasing is drawn from :data:`WITH_ATTRIBUTES` / :data:`WITHOUT_ATTRIBUTES` with ``rng`` (a
    ``random.Random`` or a seed). Titles are written with :func:`display_title` ("The Godfather (1972)").
    """
    r = rng if isinstance(rng, random.Random) else random.Random(rng)
    cited, shared = pick_cited(history, recommended, attributes, embeddings, max_cited)
    shared = shared[:max_attributes]
    rec = display_title(titles[recommended])
    if not cited:
        return ExplanationTarget(f"You may like {rec}.", (), ())
    names = _join([display_title(titles[c]) for c in cited])
    if not shared:
        text = r.choice(WITHOUT_ATTRIBUTES).format(cited=names, rec=rec, verb=verb, noun=noun)
        return ExplanationTarget(text, tuple(cited), ())
    attrs = _join([a.lower() for a in shared])
    a_attrs = ("an " if attrs[0] in "aeiou" else "a ") + attrs
    attrs_noun_n = f"{attrs} {noun}s" if len(cited) > 1 else f"{a_attrs} {noun}"
    text = r.choice(WITH_ATTRIBUTES).format(cited=names, rec=rec, verb=verb, noun=noun, attrs=attrs,
                                            a_attrs=a_attrs, attrs_noun_n=attrs_noun_n)
    return ExplanationTarget(text[0].upper() + text[1:], tuple(cited), tuple(shared))


# --------------------------------------------------------------------------- review sentences (P5 / PETER)
_SENT_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?])(?=[A-Z])|\s*\n+\s*")
_WORDS = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def split_sentences(text: str) -> list[str]:
    """Split on ``.!?`` followed by space or a capital ("affordable.I did" too) and on line breaks."""
    return [s.strip() for s in _SENT_END.split(text) if s and s.strip()]


def _mentions(sentence: str, features: set[str]) -> bool:
    for w in _WORDS.findall(sentence.lower()):
        if w in features or (w.endswith("s") and w[:-1] in features):
            return True
    return False


def review_target(review: str, summary: str = "", features: Collection[str] = (), min_words: int = 4,
                  max_words: int = 20) -> str | None:
    """A ground-truth explanation from the user's review of the item, or ``None`` if there is no text.

    In order: the first review sentence of ``min_words..max_words`` words that mentions a feature word
    (``features``: e.g. the item's keywords; plural forms match); the summary if it has 3..``max_words``
    words; the first review sentence in the length range; the first sentence cut to ``max_words`` words;
    the summary as it is.
    """
    feats = {f.lower() for f in features}
    sents = split_sentences(review or "")
    ok = [s for s in sents if min_words <= len(s.split()) <= max_words]
    if feats:
        for s in ok:
            if _mentions(s, feats):
                return s
    summary = " ".join((summary or "").split())
    if 3 <= len(summary.split()) <= max_words:
        return summary
    if ok:
        return ok[0]
    if sents:
        return " ".join(sents[0].split()[:max_words])
    return summary or None


def item_features(data, item: int) -> list[str]:
    """Feature words of an item for picking a review sentence: its attributes, else its ``keywords`` field."""
    if data.attributes[item]:
        return list(data.attributes[item])
    if "keywords" in data.item_table.column_names:
        return str(data.item_table[item]["keywords"] or "").split()
    return []


def review_reason(data, user: int, pos: int, item: int) -> str | None:
    """One sentence of ``user``'s review at sequence position ``pos`` (None when there is no text)."""
    reviews = data.user_columns["review"][user]
    summaries = data.user_columns.get("summary")
    summary = summaries[user][pos] if summaries is not None else ""
    return review_target(reviews[pos] or "", summary or "", item_features(data, item))
