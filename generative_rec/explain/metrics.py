"""Measures for generated explanations: BLEU, ROUGE-L and faithfulness to the catalogue and history.

Text overlap (pure Python, no NLTK/sacrebleu):

- :func:`tokenize` — lowercase; a token is a run of letters/digits (with internal apostrophes kept,
  ``"don't"``) or a single punctuation character. ``"Great cable, works!"`` -> ``great cable , works !``.
- :func:`corpus_bleu` — Papineni et al. (2002): clipped n-gram counts summed over the corpus, geometric
  mean of the 1..N precisions, brevity penalty ``exp(1 - r/c)`` if ``c < r`` with ``r`` the sum of the
  reference lengths closest to each hypothesis length (ties: the shorter). Scores are in ``[0, 1]``.
- :func:`rouge_l` — LCS-based F-measure (Lin, 2004), best reference per hypothesis.

Faithfulness (:func:`faithfulness`), for an explanation of recommending item ``rec`` to a user with
``history`` (catalogue indices):

(a) every catalogue title the explanation names must be a history item or ``rec``; otherwise it is a
    *hallucinated item*. Title rule (see :class:`Catalogue`): matching ignores case, punctuation,
    apostrophes, the ``" (1995)"`` year suffix, alternative titles in parentheses and MovieLens article
    reordering (``"Godfather, The"`` = ``"The Godfather"`` = ``"Godfather"``). A title variant counts
    if it carries the year (``"Heat (1995)"``), if it is quoted (``"Heat"``), if it has two or more
    words besides an article (``"Toy Story"``), or — for one-word titles — if it is written
    capitalised and not at the start of a sentence (``"... like Heat, ..."``). So ``"It"`` / ``"Heat"``
    never match inside ordinary words or in ``"it"`` / ``"the heat"`` / a sentence-initial ``"It"``.
    Matching is on whole tokens, leftmost-longest.
(b) every attribute word it claims (the attribute vocabulary, plural forms, optional aliases such as
    "science fiction" -> Sci-Fi), outside the spans of title mentions, must belong to ``rec`` or to a
    history item the explanation cites; otherwise a *hallucinated attribute*.
(c) it *cites history* if it names at least one history item.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------- tokenizer
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]|_")


def tokenize(text: str) -> list[str]:
    """Lowercase word and punctuation tokens (each punctuation character is a token)."""
    return _TOKEN.findall(text.lower().replace("’", "'"))


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _as_refs(ref: str | Sequence[str]) -> list[str]:
    return [ref] if isinstance(ref, str) else list(ref)


# --------------------------------------------------------------------------- BLEU
SMOOTHING = ("none", "floor", "add1", "exp")


@dataclass(frozen=True)
class Bleu:
    """A corpus BLEU score and its parts (precisions per order, brevity penalty, lengths)."""

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    hyp_len: int
    ref_len: int


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], max_n: int = 4,
                smoothing: str = "none", epsilon: float = 0.1) -> Bleu:
    """Corpus-level BLEU-``max_n`` (uniform weights) of hypotheses against one or more references each.

    ``smoothing`` for an order with no matching n-gram (Chen & Cherry, 2014):

    - ``"none"``: the score is 0 (the original definition);
    - ``"floor"``: that order's matches count as ``epsilon`` (method 1; sacrebleu ``floor``);
    - ``"add1"``: add 1 to matches and total for orders ``n >= 2`` (method 2, Lin & Och 2004);
    - ``"exp"``: the k-th order without matches gets precision ``1 / (2**k * total)`` (method 3, the
      NIST / sacrebleu default).

    If an order has no n-gram at all (every hypothesis shorter than ``n``) the score is 0.
    """
    if smoothing not in SMOOTHING:
        raise ValueError(f"unknown smoothing {smoothing!r} (expected one of {SMOOTHING})")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    match, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        h = tokenize(hyp)
        rs = [tokenize(r) for r in _as_refs(refs)]
        if not rs:
            raise ValueError("a hypothesis has no reference")
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            hc = _ngrams(h, n)
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, n)  # max count of each n-gram over the references
            match[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    bp = 1.0 if hyp_len > ref_len else (math.exp(1 - ref_len / hyp_len) if hyp_len else 0.0)
    precisions, k = [], 0
    for n in range(max_n):
        m, t = match[n], total[n]
        if t == 0:
            precisions.append(0.0)
            continue
        if m == 0 and smoothing == "floor":
            precisions.append(epsilon / t)
        elif smoothing == "add1" and n >= 1:
            precisions.append((m + 1) / (t + 1))
        elif m == 0 and smoothing == "exp":
            k += 1
            precisions.append(1 / (2 ** k * t))
        else:
            precisions.append(m / t)
    score = 0.0 if min(precisions) == 0 else bp * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return Bleu(score, tuple(precisions), bp, hyp_len, ref_len)


def sentence_bleu(hypothesis: str, references: str | Sequence[str], max_n: int = 4, smoothing: str = "floor") -> float:
    """BLEU of one hypothesis (smoothed by default: short sentences often miss 4-grams)."""
    return corpus_bleu([hypothesis], [references], max_n, smoothing).score


# --------------------------------------------------------------------------- ROUGE-L
@dataclass(frozen=True)
class Rouge:
    precision: float
    recall: float
    f: float


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, two rows)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypothesis: str, references: str | Sequence[str], beta: float = 1.0) -> Rouge:
    """ROUGE-L: ``P = LCS/|hyp|``, ``R = LCS/|ref|``, ``F = (1+b^2) P R / (R + b^2 P)``; best-F reference."""
    h = tokenize(hypothesis)
    best = Rouge(0.0, 0.0, 0.0)
    for ref in _as_refs(references):
        r = tokenize(ref)
        lcs = lcs_length(h, r) if h and r else 0
        if lcs == 0:
            continue
        p, rec = lcs / len(h), lcs / len(r)
        f = (1 + beta ** 2) * p * rec / (rec + beta ** 2 * p)
        if f > best.f:
            best = Rouge(p, rec, f)
    return best


# --------------------------------------------------------------------------- titles and attributes
ARTICLES = ("the", "a", "an", "il", "la", "le", "les", "l'", "el", "das", "der", "die", "lo", "los", "las", "un",
            "une", "una", "gli")
_ARTICLE_SUFFIX = re.compile(r"^(.*?),\s*(" + "|".join(re.escape(a) for a in ARTICLES) + r")$", re.IGNORECASE)
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_PAREN = re.compile(r"\s*\(([^()]*)\)")
_TRAILING_PARENS = re.compile(r"^(.*?)((?:\s*\([^()]*\))*)$")
_ID_LIKE = re.compile(r"^[A-Z0-9]{8,}$")  # "(B000068NW5)" disambiguates, it is not an alternative title
_NORM = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_ARTICLE_TOKENS = frozenset(("the", "a", "an"))  # dropped from a title variant, not counted as a word


def _norm_tokens(text: str) -> list[str]:
    return [t.lower().replace("'", "").replace("’", "") for t in _NORM.findall(text)]


def display_title(title: str) -> str:
    """MovieLens ``"Godfather, The (1972)"`` -> ``"The Godfather (1972)"``; other titles unchanged."""
    m = _YEAR.search(title)
    base, year = (title[:m.start()], m.group(0)) if m else (title, "")
    main, alts = _TRAILING_PARENS.match(base.strip()).groups()
    a = _ARTICLE_SUFFIX.match(main)
    if a:
        art = a.group(2)
        main = f"{art}{'' if art.endswith(chr(39)) else ' '}{a.group(1)}"
    return main + alts + year


def title_variants(title: str) -> list[tuple[tuple[str, ...], bool]]:
    """Token sequences a title may be written as, each with whether it carries the year."""
    m = _YEAR.search(title)
    base, year = (title[:m.start()], m.group(1)) if m else (title, None)
    alts = [p for p in _PAREN.findall(base) if not _ID_LIKE.match(p.strip())]
    main = _PAREN.sub(lambda x: x.group(0) if _ID_LIKE.match(x.group(1).strip()) else "", base)
    out: set[tuple[tuple[str, ...], bool]] = set()
    for b in {base, main, *alts}:
        forms = [b.strip()]
        a = _ARTICLE_SUFFIX.match(forms[0])
        if a:
            art = a.group(2)
            forms.append(f"{art}{'' if art.endswith(chr(39)) else ' '}{a.group(1)}")  # "L'Enfer"
        for f in forms:
            toks = tuple(_norm_tokens(f))
            if not toks:
                continue
            seqs = [toks, toks[1:]] if toks[0] in _ARTICLE_TOKENS and len(toks) > 1 else [toks]
            for t in seqs:
                out.add((t, False))
                if year:
                    out.add(((*t, year), True))
    return sorted(out)


def _plurals(tokens: tuple[str, ...]) -> set[tuple[str, ...]]:
    *head, last = tokens
    forms = {last, last + "s", last + "es"}
    if last.endswith("y") and len(last) > 2:
        forms.add(last[:-1] + "ies")
    return {(*head, f) for f in forms}


MOVIELENS_GENRE_ALIASES: dict[str, str] = {
    "science fiction": "Sci-Fi", "scifi": "Sci-Fi", "sci fi": "Sci-Fi", "noir": "Film-Noir",
    "children": "Children's", "kids": "Children's", "family": "Children's", "animated": "Animation",
    "romantic": "Romance", "comedic": "Comedy", "documentary": "Documentary", "thrilling": "Thriller",
    "mysterious": "Mystery", "musicals": "Musical", "adventurous": "Adventure", "scary": "Horror",
}


@dataclass
class Catalogue:
    """Item titles and attributes by catalogue index, with the indices faithfulness matching needs.

    ``vocabulary`` defaults to every attribute value except ``"unknown"`` (a MovieLens placeholder);
    ``aliases`` maps other phrases to a vocabulary entry (e.g. :data:`MOVIELENS_GENRE_ALIASES`).
    """

    titles: list[str]
    attributes: list[list[str]] = field(default_factory=list)
    vocabulary: Iterable[str] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.attributes:
            self.attributes = [[] for _ in self.titles]
        if len(self.attributes) != len(self.titles):
            raise ValueError("titles and attributes must have the same length")
        vocab = self.vocabulary if self.vocabulary is not None else {
            a for attrs in self.attributes for a in attrs if a.lower() != "unknown"}
        self._canon = {a.lower(): a for a in vocab}
        self.item_attrs = [{a.lower() for a in attrs} for attrs in self.attributes]
        # title index: token tuple -> [(item, has_year, content words)]
        self._titles: dict[tuple[str, ...], list[tuple[int, bool, int]]] = {}
        for idx, t in enumerate(self.titles):
            for toks, strong in title_variants(t):
                content = sum(1 for w in toks if w not in _ARTICLE_TOKENS)
                self._titles.setdefault(toks, []).append((idx, strong, content))
        self._max_title = max((len(k) for k in self._titles), default=1)
        self._attrs: dict[tuple[str, ...], str] = {}
        for phrase, target in [*((a, a) for a in vocab), *self.aliases.items()]:
            if target.lower() not in self._canon:
                continue
            toks = tuple(_norm_tokens(phrase))
            if toks:
                for form in _plurals(toks):
                    self._attrs.setdefault(form, target.lower())
        self._max_attr = max((len(k) for k in self._attrs), default=1)

    def find_titles(self, text: str) -> list[tuple[str, set[int], tuple[int, int]]]:
        """Title mentions in ``text``: ``(mention, candidate items, (start, end) token span)``."""
        spans = [(m.start(), m.end(), m.group(0)) for m in _NORM.finditer(text)]
        toks = [s[2].lower().replace("'", "").replace("’", "") for s in spans]
        quoted = [(q.start(q.lastindex), q.end(q.lastindex)) for q in _QUOTED.finditer(text)]
        out, taken = [], [False] * len(toks)
        for qs, qe in quoted:  # a quoted span naming a title exactly
            ids = [k for k, (s, e, _) in enumerate(spans) if s >= qs and e <= qe]
            if ids and (items := self._titles.get(tuple(toks[k] for k in ids))):
                out.append((text[qs:qe], {i for i, _, _ in items}, (ids[0], ids[-1] + 1)))
                for k in ids:
                    taken[k] = True
        i = 0
        while i < len(toks):
            hit = None
            if not taken[i]:
                for n in range(min(self._max_title, len(toks) - i), 0, -1):
                    if any(taken[i:i + n]):
                        continue
                    ok = {it for it, strong, content in self._titles.get(tuple(toks[i:i + n]), ())
                          if strong or content >= 2 or (content == 1 and self._proper(text, spans, i, n))}
                    if ok:
                        end = spans[i + n - 1][1]
                        if toks[i + n - 1].isdigit() and text[end:end + 1] == ")":  # "Heat (1995)"
                            end += 1
                        hit = (text[spans[i][0]:end], ok, (i, i + n))
                        break
            if hit:
                out.append(hit)
                i = hit[2][1]
            else:
                i += 1
        return sorted(out, key=lambda m: m[2])

    @staticmethod
    def _proper(text: str, spans, i: int, n: int) -> bool:
        """A one-content-word mention counts when that word is capitalised and not sentence-initial."""
        k = next((j for j in range(i, i + n) if spans[j][2].lower() not in _ARTICLE_TOKENS), i)
        word_start = spans[k][0]
        if not spans[k][2][0].isupper():
            return False
        before = text[:word_start].rstrip()
        return bool(before) and before[-1] not in ".!?\n"

    def find_attributes(self, text: str, skip: Iterable[tuple[int, int]] = ()) -> list[str]:
        """Attribute claims in ``text`` (canonical vocabulary names), ignoring the token spans ``skip``."""
        toks = _norm_tokens(text)
        masked = [False] * len(toks)
        for s, e in skip:
            for k in range(s, e):
                masked[k] = True
        out, i = [], 0
        while i < len(toks):
            for n in range(min(self._max_attr, len(toks) - i), 0, -1):
                key = tuple(toks[i:i + n])
                if not any(masked[i:i + n]) and key in self._attrs:
                    out.append(self._canon[self._attrs[key]])
                    i += n
                    break
            else:
                i += 1
        return list(dict.fromkeys(out))


# "Heat", “Heat” or 'Heat' (a single quote only when not inside a word, so "don't" opens nothing)
_QUOTED = re.compile(r"\"([^\"\n]+)\"|“([^”\n]+)”|(?<!\w)'([^'\n]+)'(?!\w)")


# --------------------------------------------------------------------------- faithfulness
@dataclass(frozen=True)
class Faithfulness:
    """What one explanation names and claims, checked against the history and the recommended item."""

    cited_history: tuple[int, ...]  # history items it names
    names_recommended: bool
    hallucinated_items: tuple[str, ...]  # mentions of catalogue titles that are neither
    claimed_attributes: tuple[str, ...]
    hallucinated_attributes: tuple[str, ...]  # claims not held by the item or a cited history item

    @property
    def item_hallucination(self) -> bool:
        return bool(self.hallucinated_items)

    @property
    def attribute_hallucination(self) -> bool:
        return bool(self.hallucinated_attributes)

    @property
    def hallucinated(self) -> bool:
        return self.item_hallucination or self.attribute_hallucination

    @property
    def cites_history(self) -> bool:
        return bool(self.cited_history)


def faithfulness(explanation: str, history: Sequence[int], recommended: int, catalogue: Catalogue) -> Faithfulness:
    """Check one explanation (see the module docstring for the rules). Items are catalogue indices."""
    hist = set(int(h) for h in history)
    cited: list[int] = []
    names_rec = False
    bad_items: list[str] = []
    spans = []
    for mention, cands, span in catalogue.find_titles(explanation):
        spans.append(span)
        in_hist = sorted(cands & hist)
        if in_hist:
            cited.extend(in_hist)
        elif recommended in cands:
            names_rec = True
        else:
            bad_items.append(mention)
    claimed = catalogue.find_attributes(explanation, spans)
    allowed = set(catalogue.item_attrs[recommended])
    for c in cited:
        allowed |= catalogue.item_attrs[c]
    bad_attrs = [a for a in claimed if a.lower() not in allowed]
    return Faithfulness(tuple(dict.fromkeys(cited)), names_rec, tuple(bad_items), tuple(claimed), tuple(bad_attrs))


def explanation_report(results: Sequence[Faithfulness], hypotheses: Sequence[str] | None = None,
                       references: Sequence[str | Sequence[str] | None] | None = None,
                       smoothing: str = "floor") -> dict[str, float]:
    """Aggregate: hallucination rates, citation rate and, over the explanations with a reference,
    corpus BLEU-1 / BLEU-4 and mean ROUGE-L (precision, recall, F). Rates are shares in ``[0, 1]``."""
    n = len(results)
    out: dict[str, float] = {"n": float(n)}
    if n:
        out |= {
            "hallucination_rate": sum(r.hallucinated for r in results) / n,
            "item_hallucination_rate": sum(r.item_hallucination for r in results) / n,
            "attribute_hallucination_rate": sum(r.attribute_hallucination for r in results) / n,
            "citation_rate": sum(r.cites_history for r in results) / n,
        }
    if hypotheses is not None and references is not None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
        pairs = [(h, r) for h, r in zip(hypotheses, references, strict=True) if r]
        out["n_with_reference"] = float(len(pairs))
        if pairs:
            hs, rs = [p[0] for p in pairs], [p[1] for p in pairs]
            out["bleu1"] = corpus_bleu(hs, rs, 1, smoothing).score
            out["bleu4"] = corpus_bleu(hs, rs, 4, smoothing).score
            rl = [rouge_l(h, r) for h, r in pairs]
            out["rouge_l_p"] = sum(x.precision for x in rl) / len(rl)
            out["rouge_l_r"] = sum(x.recall for x in rl) / len(rl)
            out["rouge_l_f"] = sum(x.f for x in rl) / len(rl)
    return out


def evaluate_explanations(explanations: Sequence[str], histories: Sequence[Sequence[int]],
                          recommended: Sequence[int], catalogue: Catalogue,
                          references: Sequence[str | Sequence[str] | None] | None = None) -> dict[str, float]:
    """:func:`faithfulness` for each explanation, then :func:`explanation_report`."""
    if not len(explanations) == len(histories) == len(recommended):
        raise ValueError("explanations, histories and recommended must have the same length")
    res = [faithfulness(e, h, r, catalogue) for e, h, r in zip(explanations, histories, recommended, strict=True)]
    return explanation_report(res, explanations if references is not None else None, references)
