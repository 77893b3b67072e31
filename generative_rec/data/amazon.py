"""Amazon product reviews (McAuley et al., 2014 and 2018 releases): reviews -> Interactions, Items.

Review file: one record per line, JSON (2014 ``reviews_*.json.gz``, 2018 ``*.json.gz``) or the loose
python-literal form some 2014 files use (``{'asin': ...}``), plain or gzip. Fields used:
``reviewerID`` (user), ``asin`` (item), ``overall`` (rating), ``unixReviewTime`` (timestamp) — required —
and ``reviewText`` / ``summary`` (the interaction texts ``review`` / ``summary``; missing means ``""``).
2018-only fields (``vote``, ``style``, ``image``, ``verified``) are ignored.

Optional metadata file (2014 ``meta_*.json``: asin, title, categories, description, brand; 2018 ``meta_*.json``:
asin, title, category, description, brand). Where an item has no metadata title (the 5-core Musical
Instruments file ships none at all), its title and description are *mined from its reviews*:
see :func:`items_from_reviews`.

Leakage: a mined title is model input, so by default it is built only from reviews that stay in the
training part of the leave-one-out split: each user's last ``item_text_holdout`` (=2) distinct items, in the
same order ``prepare`` uses (chronological, ties in input order, first review of a (user, item) pair), are
left out — and so is every other review of those (user, item) pairs. ``prepare`` filters (``min_rating``,
``kcore``) applied *after* reading can shift which items end up last; for exact leak-freeness under such
filters, rebuild the items from the filtered rows with :func:`holdout_mask` + :func:`items_from_reviews`.
"""

from __future__ import annotations

import ast
import html
import logging
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from generative_rec.data.readers import _check_file, iter_json_lines, parse_float
from generative_rec.data.tables import Interactions, Items
from generative_rec.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class AmazonSpec:
    """How to read an Amazon review file (and optionally its item metadata)."""

    path: str  # reviews JSONL (.json / .jsonl, optionally .gz)
    meta_path: str | None = None  # item metadata JSONL (2014 or 2018 layout), optional
    item_text_holdout: int = 2  # leave out each user's last N items when mining item text (0 = use all)
    title_phrases: int = 2  # phrases joined into a mined title
    description_phrases: int = 12  # phrases listed in a mined description
    keywords: int = 8  # single-word keywords per item (the ``keywords`` field, usable as attribute_field)


def read_amazon(spec: AmazonSpec) -> tuple[Interactions, Items]:
    """Read reviews (and metadata); item title/description come from metadata or the training reviews."""
    inter = read_reviews(spec.path)
    allowed = ~holdout_mask(inter, spec.item_text_holdout) if spec.item_text_holdout > 0 else None
    mined = items_from_reviews(inter, allowed, spec.title_phrases, spec.description_phrases, spec.keywords)
    if not spec.meta_path:
        return inter, mined
    meta = read_metadata(spec.meta_path)
    return inter, merge_metadata(mined, meta, source=str(spec.meta_path))


# --------------------------------------------------------------------------- records
def iter_loose_json(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` from a JSON-lines file; python-literal lines are accepted too."""
    return iter_json_lines(_check_file(path), fallback=_literal)


def _literal(raw: str) -> dict | None:
    s = raw.strip()
    if not s.startswith("{"):
        return None
    try:
        v = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return v if isinstance(v, dict) else None


def _required(rec: dict, key: str, path: str, line: int) -> object:
    v = rec.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        raise DataError(f"missing field {key!r}", path, line)
    return v


def _text(rec: dict, key: str) -> str:
    v = rec.get(key)
    if v is None:
        return ""
    return " ".join(v.split()) if isinstance(v, str) else str(v)


def read_reviews(path: str | os.PathLike) -> Interactions:
    """Read an Amazon review file into :class:`Interactions` (texts ``review`` and ``summary``)."""
    path = str(path)
    users, items, times, ratings, lines = [], [], [], [], []
    texts: dict[str, list[str]] = {"review": [], "summary": []}
    for lineno, rec in iter_loose_json(path):
        users.append(str(_required(rec, "reviewerID", path, lineno)).strip())
        items.append(str(_required(rec, "asin", path, lineno)).strip())
        t = _required(rec, "unixReviewTime", path, lineno)
        if isinstance(t, bool):
            raise DataError(f"unixReviewTime {t!r} is not a number", path, lineno)
        times.append(parse_float(t, "unixReviewTime", path, lineno))
        r = _required(rec, "overall", path, lineno)
        if isinstance(r, bool):
            raise DataError(f"overall {r!r} is not a number", path, lineno)
        ratings.append(parse_float(r, "overall", path, lineno))
        texts["review"].append(_text(rec, "reviewText"))
        texts["summary"].append(_text(rec, "summary"))
        lines.append(lineno)
    if not users:
        raise DataError("no reviews (file has only blank lines)", path)
    return Interactions(users, items, np.asarray(times, dtype=np.float64), np.asarray(ratings, dtype=np.float64),
                        texts, source=path, lines=np.asarray(lines, dtype=np.int64))


def holdout_mask(inter: Interactions, last_n: int = 2) -> np.ndarray:
    """Rows that belong to each user's last ``last_n`` distinct items (the leave-one-out valid/test part).

    Order as in ``prepare``: per user, a stable sort on time (ties in input order), the first row of each
    (user, item) pair counts; every row of a held-out (user, item) pair is marked.
    """
    mask = np.zeros(len(inter), dtype=bool)
    if last_n <= 0:
        return mask
    groups: dict[str, list[int]] = defaultdict(list)
    for row, u in enumerate(inter.users):
        groups[u].append(row)
    held: set[tuple[str, str]] = set()
    for u, rows in groups.items():
        rows_a = np.asarray(rows, dtype=np.int64)
        order = rows_a[np.argsort(inter.timestamps[rows_a], kind="stable")]
        seq = list(dict.fromkeys(inter.items[r] for r in order))
        held.update((u, i) for i in seq[-last_n:])
    for row, (u, i) in enumerate(zip(inter.users, inter.items, strict=True)):
        mask[row] = (u, i) in held
    return mask


# --------------------------------------------------------------------------- mining item text from reviews
Phrase = tuple[str, ...]
_WORD = re.compile(r"[A-Za-z0-9]+(?:[-'’][A-Za-z0-9]+)*|[^\sA-Za-z0-9]")
_STOPWORDS = """
a about above after again against all almost also although always am among an and another any anyone anything
are aren't around as at away back be because been before being below best better between big both bought but buy
buying by came can cannot can't come comes could couldn't did didn't do does doesn't doing don't done down during each
easy either else enough especially even ever every everything excellent exactly expected far few find fine first for
found from get gets getting give given go goes going good got great had has hasn't have haven't having he her here
highly him his how however i i'd i'll i'm i've if in into is isn't it it's its just keep kind know last least less
like liked little long look looking looks lot lots love loved made make makes many may me might more most much must
my need needed needs never new nice no none nor not nothing now of off ok okay old on once one ones only or other
others our out over own perfect pretty product products purchase purchased put quality quite rather really recommend
recommended right said same say see seems seem she should since so some something still such sure take than thank
thanks that that's the their them then there these they thing things think this those though thought through time
times to too took tried try trying two under until up us use used using very want wanted was wasn't way we well went
were what when where which while who whole why will with without won't work worked working works worth would
wouldn't wow yes yet you your amazon item items stars star five four three price priced value money deal cheap
cheaper awesome fantastic amazing terrific wonderful happy pleased glad bad worst review reviews job buck bucks
definitely absolutely simply overall super solid decent fair must-have gave give gives superb beat anywhere
guess help helps fit fits feel feels hold holds play playing played likes supposed extra bit issue issues year years
day days week weeks month months plus etc actually probably maybe already completely satisfied disappointed sturdy
"""
_STOP = frozenset(_STOPWORDS.split())


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text)


def _phrases(text: str, max_n: int = 3) -> set[Phrase]:
    """Candidate phrases: 1..max_n-grams inside runs of non-stopword words (RAKE-style chunks)."""
    out: set[Phrase] = set()
    chunk: list[str] = []
    for tok in [*_tokens(text.lower()), "."]:
        if tok[0].isalnum() and tok not in _STOP and "'" not in tok and "’" not in tok:
            chunk.append(tok)
            continue
        for n in range(1, max_n + 1):
            for s in range(len(chunk) - n + 1):
                g = tuple(chunk[s:s + n])
                if any(len(w) >= 3 and w.isalpha() for w in g):
                    out.add(g)
        chunk = []
    return out


def _surface_forms(texts: Sequence[str]) -> dict[str, str]:
    """Most common written form of each lower-cased word in running text (keeps 'XLR', 'Fender')."""
    forms: dict[str, Counter] = defaultdict(Counter)
    for t in texts:
        if t.isupper():
            continue
        for tok in _tokens(t):
            if tok[0].isalnum():
                forms[tok.lower()][tok] += 1
    return {w: c.most_common(1)[0][0] for w, c in forms.items()}


def items_from_reviews(inter: Interactions, allowed: np.ndarray | None = None, title_phrases: int = 2,
                       description_phrases: int = 12, keywords: int = 8) -> Items:
    """Build one item per asin (first-appearance order) with a title and text mined from its reviews.

    Only rows where ``allowed`` is true are read (``None``: all rows). Phrases are 1–3-word runs of
    non-stopwords (generic praise such as "great", "works", "price" counts as a stopword) from the review
    summaries (weight 2) and bodies (weight 1), counted once per review, scored by TF-IDF against the other
    items: ``(1 + log support) * log((1 + N) / (1 + items using it)) * (1 + 0.25 (words - 1))``. A title
    phrase must occur in at least two reviews of the item where any does.

    Title: the best ``title_phrases`` phrases that share no word, e.g. ``"Pop filter, windscreen"``. Titles
    are readable rather than ID-like on purpose (they are prompt text and the targets of the title ID
    scheme; an ASIN adds opaque tokens a model can copy): they are made unique by adding the item's next
    phrase, and only if that fails by an ``" (ASIN)"`` suffix. An item with no allowed review gets
    ``"Item ASIN"`` and empty fields. Fields: ``description`` ("Reviewers mention: a, b, ...", no final period:
    ``prepare`` joins fields with ". ") and ``keywords`` (space-separated
    single words, usable as ``attribute_field``).
    """
    ids = list(dict.fromkeys(inter.items))
    rows_of: dict[str, list[int]] = defaultdict(list)
    for r, i in enumerate(inter.items):
        if allowed is None or allowed[r]:
            rows_of[i].append(r)
    summaries, reviews = inter.texts.get("summary", [""] * len(inter)), inter.texts.get("review", [""] * len(inter))
    support: dict[str, Counter] = {}
    nrev: dict[str, Counter] = {}
    df: Counter = Counter()
    for i in ids:
        sup, cnt = Counter(), Counter()
        for r in rows_of.get(i, []):
            ps, pr = _phrases(summaries[r]), _phrases(reviews[r])
            for g in ps | pr:
                sup[g] += 2 if g in ps else 1
                cnt[g] += 1
        support[i], nrev[i] = sup, cnt
        df.update(sup.keys())
    n_items = len(ids)
    forms = _surface_forms([reviews[r] for rows in rows_of.values() for r in rows])

    def ranked(i: str) -> list[Phrase]:
        sup = support[i]
        scored = [((1 + math.log(s)) * math.log((1 + n_items) / (1 + df[g])) * (1 + 0.25 * (len(g) - 1)), g)
                  for g, s in sup.items()]
        scored.sort(key=lambda x: (nrev[i][x[1]] < 2, -x[0], x[1]))  # phrases of >= 2 reviews first
        return [g for _, g in scored]

    def render(g: Phrase) -> str:
        return " ".join(forms.get(w, w) for w in g)

    titles: list[list[Phrase]] = []
    spares: list[list[Phrase]] = []
    descs, kws = [], []
    for i in ids:
        order = ranked(i)
        chosen, rest = _pick_title_phrases([g for g in order if nrev[i][g] >= 2] or order, title_phrases)
        titles.append(chosen)
        spares.append(rest)
        listed = _pick_distinct(order, description_phrases)
        descs.append("Reviewers mention: " + ", ".join(render(g) for g in listed) if listed else "")
        kws.append(" ".join([forms.get(g[0], g[0]) for g in order if len(g) == 1 and g[0].isalpha()][:keywords]))
    names = _unique_titles(ids, titles, spares, render)
    return Items(ids, names, {"description": descs, "keywords": kws}, source=f"{inter.source} (mined from reviews)")


def _pick_title_phrases(ranked: list[Phrase], k: int) -> tuple[list[Phrase], list[Phrase]]:
    """The first ``k`` phrases sharing no (crudely stemmed) word, and the later such phrases as spares."""
    chosen: list[Phrase] = []
    rest: list[Phrase] = []
    used: set[str] = set()
    for g in ranked:
        stems = {_stem(w) for w in g}
        if stems & used:
            continue
        (chosen if len(chosen) < k else rest).append(g)
        used |= stems
    return chosen, rest


def _pick_distinct(ranked: list[Phrase], k: int) -> list[Phrase]:
    """Up to ``k`` phrases, none inside another ("cable" is dropped after "guitar cables")."""
    listed: list[Phrase] = []
    stems: list[Phrase] = []
    for g in ranked:
        if len(listed) >= k:
            break
        sg = tuple(_stem(w) for w in g)
        if not any(_contains(h, sg) or _contains(sg, h) for h in stems):
            listed.append(g)
            stems.append(sg)
    return listed


def _stem(w: str) -> str:
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def _contains(big: Phrase, small: Phrase) -> bool:
    n = len(small)
    return any(big[s:s + n] == small for s in range(len(big) - n + 1))


def _title(render: Callable[[Phrase], str], phrases: list[Phrase]) -> str:
    s = ", ".join(render(g) for g in phrases)
    return s[:1].upper() + s[1:]


def _unique_titles(ids: list[str], titles: list[list[Phrase]], spares: list[list[Phrase]],
                   render: Callable[[Phrase], str]) -> list[str]:
    """Titles from phrases; clashing ones get the item's next phrase (up to 3 times), then ``" (ASIN)"``."""
    parts = [list(t) for t in titles]
    names = [_title(render, t) if t else f"Item {i}" for i, t in zip(ids, parts, strict=True)]
    for extra in range(3):
        clash = Counter(n.lower() for n in names)
        if all(c == 1 for c in clash.values()):
            return names
        for k, n in enumerate(names):
            if clash[n.lower()] > 1 and parts[k] and extra < len(spares[k]):
                parts[k].append(spares[k][extra])
                names[k] = _title(render, parts[k])
    clash = Counter(n.lower() for n in names)
    return [f"{n} ({i})" if clash[n.lower()] > 1 else n for n, i in zip(names, ids, strict=True)]


# --------------------------------------------------------------------------- metadata
_TAG = re.compile(r"<[^>]+>")


def _clean(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        v = " ".join(_clean(x) for x in v)
    return " ".join(html.unescape(_TAG.sub(" ", str(v))).split())


def read_metadata(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Read a 2014 or 2018 metadata file: ``asin -> {title, categories, description, brand}``.

    ``categories`` joins the distinct category names (2014 ``categories`` is a list of paths, 2018
    ``category`` a single path) with ``" | "``, the root category left out. Repeated asins (the 2018 files
    have some) keep their first record.
    """
    path = str(path)
    out: dict[str, dict[str, str]] = {}
    dup = 0
    for lineno, rec in iter_loose_json(path):
        asin = str(_required(rec, "asin", path, lineno)).strip()
        if asin in out:
            dup += 1
            continue
        cats = rec.get("categories", rec.get("category")) or []
        paths = cats if cats and all(isinstance(c, list) for c in cats) else [cats]
        names = list(dict.fromkeys(_clean(c) for p in paths for c in (p[1:] if len(p) > 1 else p) if _clean(c)))
        out[asin] = {"title": _clean(rec.get("title")), "categories": " | ".join(names),
                     "description": _clean(rec.get("description")), "brand": _clean(rec.get("brand"))}
    if not out:
        raise DataError("no item records (file has only blank lines)", path)
    if dup:
        log.warning("%s: %d repeated asin record(s) ignored (first kept)", path, dup)
    return out


def merge_metadata(mined: Items, meta: dict[str, dict[str, str]], source: str = "") -> Items:
    """Metadata title/description where present, the mined ones otherwise; adds categories and brand."""
    titles, descs, cats, brands = [], [], [], []
    for n, i in enumerate(mined.ids):
        m = meta.get(i, {})
        titles.append(m.get("title") or mined.titles[n])
        descs.append(m.get("description") or mined.fields["description"][n])
        cats.append(m.get("categories", ""))
        brands.append(m.get("brand", ""))
    missing = sum(1 for i in mined.ids if not meta.get(i, {}).get("title"))
    if missing:
        log.info("%d of %d item(s) have no metadata title; using titles mined from reviews", missing, len(mined))
    # Metadata titles can repeat (variants of one product): keep them unique the same way as mined ones.
    clash = Counter(t.lower() for t in titles)
    titles = [f"{t} ({i})" if clash[t.lower()] > 1 else t for t, i in zip(titles, mined.ids, strict=True)]
    fields = {"description": descs, "keywords": mined.fields["keywords"], "categories": cats, "brand": brands}
    return Items(mined.ids, titles, fields, source=source or mined.source)


__all__ = ["AmazonSpec", "holdout_mask", "items_from_reviews", "merge_metadata", "read_amazon",
           "read_metadata", "read_reviews"]
