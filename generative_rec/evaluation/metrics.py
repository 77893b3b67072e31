"""Ranking metrics over top-K lists: accuracy, beyond-accuracy, validity and paired significance.

Pure numpy (scipy for the tests of significance). Every function takes ranked lists ``topk`` of shape
``[U, K]`` holding dense item indices, best first, where ``-1`` pads a list that has fewer than ``K``
items (e.g. a user whose history covers almost the whole catalogue). ``@k`` reads the first ``k``
columns; padding is never a hit, never an item.

Accuracy metrics assume one relevant item per user (leave-one-out), so with ``r`` the 1-based rank of the
target in the list (``r = 0`` when it is absent):

- ``HR@k   = 1[0 < r <= k]``
- ``NDCG@k = 1 / log2(r + 1)`` if ``0 < r <= k`` else 0 (the ideal DCG of one relevant item is 1)
- ``MRR@k  = 1 / r`` if ``0 < r <= k`` else 0 (reported at each cut-off: an MRR without one would
  silently mean "within the list width").
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

KS = (1, 5, 10, 20)


@dataclass(frozen=True)
class MetricResult:
    """Means (for tables) and per-user values (for significance tests), keyed like ``"NDCG@10"``."""

    means: dict[str, float]
    per_user: dict[str, np.ndarray]


# --------------------------------------------------------------------------- accuracy
def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each user's target in its list, 0 where it is absent. Shape ``[U]``."""
    topk, targets = _check_lists(topk), np.asarray(targets)
    if targets.shape != (topk.shape[0],):
        raise ValueError(f"targets must have shape ({topk.shape[0]},), got {targets.shape}")
    hit = (topk == targets[:, None]) & (topk >= 0)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user HR@k from :func:`target_ranks`."""
    return ((ranks > 0) & (ranks <= k)).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with a single relevant item: ``1 / log2(rank + 1)`` inside the top k."""
    inside = (ranks > 0) & (ranks <= k)
    return np.where(inside, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def mrr(ranks: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user reciprocal rank (within the top ``k`` when given, else within the whole list)."""
    inside = ranks > 0 if k is None else (ranks > 0) & (ranks <= k)
    return np.where(inside, 1.0 / np.maximum(ranks, 1), 0.0)


def accuracy(topk: np.ndarray, targets: np.ndarray, ks: Iterable[int] = KS) -> MetricResult:
    """HR@k, NDCG@k, MRR@k for each ``k`` in ``ks`` (k no larger than the list width).

    Raises ``ValueError`` for a ``k`` wider than the lists: a metric at a cut-off that was never ranked
    would silently read as a lower number.
    """
    topk = _check_lists(topk)
    ranks = target_ranks(topk, targets)
    per_user: dict[str, np.ndarray] = {}
    for k in ks:
        if k > topk.shape[1]:
            raise ValueError(f"cut-off {k} is wider than the ranked lists ({topk.shape[1]})")
        per_user[f"HR@{k}"] = hit_rate(ranks, k)
        per_user[f"NDCG@{k}"] = ndcg(ranks, k)
        per_user[f"MRR@{k}"] = mrr(ranks, k)
    return MetricResult({m: float(v.mean()) if len(v) else math.nan for m, v in per_user.items()}, per_user)


# The columns result tables show, in order (``genrec eval``, ``genrec benchmark``); a table shows those present.
TABLE_METRICS = ["HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@20", "Coverage@10",
                 "Novelty@10", "PopBias@10", "ILD@10", "Validity", "Invalid (no trie)", "Duplicate (no trie)"]


# --------------------------------------------------------------------------- beyond accuracy
def coverage(topk: np.ndarray, num_items: int, k: int) -> float:
    """Catalogue coverage@k: distinct items recommended in any top-k list / ``num_items``."""
    lists = _check_lists(topk)[:, :k]
    return len(np.unique(lists[lists >= 0])) / num_items


def jaccard_distance(a: set, b: set) -> float:
    """``1 - |A∩B| / |A∪B|``; two empty sets are at distance 0 (nothing tells the items apart)."""
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def intra_list_diversity(topk: np.ndarray, k: int, attributes: Sequence[Iterable[str]] | None = None,
                         embeddings: np.ndarray | None = None) -> MetricResult:
    """ILD@k: mean pairwise distance between the items of each top-k list.

    Give exactly one item representation: ``attributes`` (one set of strings per item, e.g. genres;
    Jaccard distance, :func:`jaccard_distance`) or ``embeddings`` ``[N, d]`` (cosine distance
    ``1 - cos``; a zero vector is at distance 1 from everything). Padding is skipped; a list with fewer
    than two items has no pairs and is left out of the mean (its per-user value is NaN).
    """
    if (attributes is None) == (embeddings is None):
        raise ValueError("give exactly one of attributes or embeddings")
    lists = _check_lists(topk)[:, :k]
    out = np.full(len(lists), np.nan)
    if embeddings is not None:
        e = np.asarray(embeddings, dtype=np.float64)
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        e = e / np.where(norms > 0, norms, 1.0)
    else:
        sets = [set(a) for a in attributes]
    for u, row in enumerate(lists):
        items = row[row >= 0]
        n = len(items)
        if n < 2:
            continue
        iu, ju = np.triu_indices(n, 1)
        if embeddings is not None:
            out[u] = (1.0 - np.einsum("pd,pd->p", e[items[iu]], e[items[ju]])).mean()
        else:
            out[u] = np.mean([jaccard_distance(sets[items[i]], sets[items[j]]) for i, j in zip(iu, ju, strict=True)])
    mean = float(np.nanmean(out)) if np.isfinite(out).any() else math.nan
    return MetricResult({f"ILD@{k}": mean}, {f"ILD@{k}": out})


def self_information(train_counts: np.ndarray, num_users: int) -> np.ndarray:
    """Per-item novelty ``-log2(pop_i / num_users)`` from training popularity.

    ``pop_i`` is the number of training interactions with item ``i`` (at most one per user in a
    de-duplicated data set), clipped to ``[1, num_users]``: an item never seen in training counts as
    seen once, so it gets the largest finite value ``log2(num_users)`` instead of infinity, and an
    item counted more often than there are users (repeat interactions) gets 0.
    """
    pop = np.clip(np.asarray(train_counts, dtype=np.float64), 1.0, float(num_users))
    return -np.log2(pop / num_users)


def novelty(topk: np.ndarray, train_counts: np.ndarray, num_users: int, k: int) -> MetricResult:
    """Novelty@k: mean self-information (:func:`self_information`) of the items in each top-k list."""
    return _mean_item_value(topk, self_information(train_counts, num_users), k, f"Novelty@{k}")


def popular_items(train_counts: np.ndarray, share: float = 0.1) -> np.ndarray:
    """The ``ceil(share * N)`` most popular training items (ties: the lower item index first)."""
    counts = np.asarray(train_counts)
    n_top = math.ceil(share * len(counts))
    return np.argsort(-counts, kind="stable")[:n_top]


def popularity_bias(topk: np.ndarray, train_counts: np.ndarray, k: int, share: float = 0.1) -> MetricResult:
    """PopBias@k: share of each top-k list that lies in the top ``share`` most popular training items."""
    is_top = np.zeros(len(train_counts), dtype=np.float64)
    is_top[popular_items(train_counts, share)] = 1.0
    return _mean_item_value(topk, is_top, k, f"PopBias@{k}")


def validity(returned: Sequence[Sequence], catalogue: int | Container) -> float:
    """Share of all returned ids that are real catalogue items (micro average over every id returned).

    ``returned`` holds what a generator produced per user, unpadded (an invalid generation must be in
    the list, not dropped). ``catalogue`` is either ``num_items`` (valid ids are integers in
    ``0..num_items-1``) or a container of valid ids (e.g. the set of item-id strings). Returns NaN when
    nothing was returned at all.
    """
    if isinstance(catalogue, int | np.integer):
        n_items = int(catalogue)

        def ok(x: object) -> bool:
            return isinstance(x, int | np.integer) and not isinstance(x, bool) and 0 <= x < n_items
    else:
        def ok(x: object) -> bool:
            return x in catalogue

    flat = [x for ids in returned for x in ids]
    return sum(map(ok, flat)) / len(flat) if flat else math.nan


def beyond_accuracy(topk: np.ndarray, train_counts: np.ndarray, num_users: int, k: int = 10,
                    attributes: Sequence[Iterable[str]] | None = None) -> MetricResult:
    """Coverage@k, Novelty@k, PopBias@k and (with item ``attributes``) Jaccard ILD@k in one result."""
    parts = [novelty(topk, train_counts, num_users, k), popularity_bias(topk, train_counts, k)]
    if attributes is not None:
        parts.append(intra_list_diversity(topk, k, attributes=attributes))
    means = {f"Coverage@{k}": coverage(topk, len(train_counts), k)}
    per_user: dict[str, np.ndarray] = {}
    for p in parts:
        means.update(p.means)
        per_user.update(p.per_user)
    return MetricResult(means, per_user)


# --------------------------------------------------------------------------- significance
@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of model A against model B on the same users (``mean_diff`` = mean(A - B))."""

    n: int
    mean_diff: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float


def paired_significance(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test (two-sided, scipy) on per-user values.

    Use per-user NDCG@10 of two models over the same users, in the same order. When every difference is
    zero the two models are indistinguishable: both p-values are 1 and both statistics 0 (scipy would
    return NaN or raise).
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two per-user vectors of the same length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("need at least two users for a paired test")
    diff = a - b
    if not np.any(diff):
        return PairedTest(len(a), 0.0, 0.0, 1.0, 0.0, 1.0)
    t = stats.ttest_rel(a, b)
    w = stats.wilcoxon(a, b, zero_method="wilcox")
    return PairedTest(len(a), float(diff.mean()), float(t.statistic), float(t.pvalue),
                      float(w.statistic), float(w.pvalue))


# --------------------------------------------------------------------------- tables
def format_table(results: dict[str, dict[str, object]], metrics: Sequence[str] | None = None,
                 digits: int = 4) -> str:
    """A Markdown table: one row per model, one column per metric.

    Columns are ``metrics`` or, by default, every metric in first-seen order. Floats are printed with
    ``digits`` decimals, other values as ``str``; a missing value is ``-``.
    """
    if metrics is None:
        metrics = list(dict.fromkeys(m for row in results.values() for m in row))

    def cell(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float | np.floating):
            return "nan" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(cell(row.get(m)) for m in metrics) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- helpers
def _check_lists(topk: np.ndarray) -> np.ndarray:
    topk = np.asarray(topk)
    if topk.ndim != 2 or not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"topk must be a 2-D integer array [users, K], got {topk.dtype} {topk.shape}")
    return topk


def _mean_item_value(topk: np.ndarray, value: np.ndarray, k: int, name: str) -> MetricResult:
    """Per-user mean of ``value[item]`` over the non-padding items of each top-k list (NaN if empty)."""
    lists = _check_lists(topk)[:, :k]
    valid = lists >= 0
    v = np.where(valid, value[np.where(valid, lists, 0)], 0.0)
    n = valid.sum(axis=1)
    out = np.where(n > 0, v.sum(axis=1) / np.maximum(n, 1), np.nan)
    mean = float(np.nanmean(out)) if np.isfinite(out).any() else math.nan
    return MetricResult({name: mean}, {name: out})
