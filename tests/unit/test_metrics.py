"""Hand-computed fixtures for every metric (the arithmetic is in the comments), plus a few properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generative_rec.evaluation.metrics import (
    accuracy,
    beyond_accuracy,
    coverage,
    format_table,
    hit_rate,
    intra_list_diversity,
    jaccard_distance,
    mrr,
    ndcg,
    novelty,
    paired_significance,
    popular_items,
    popularity_bias,
    self_information,
    target_ranks,
    validity,
)

# Three users, lists of width 5; user 2's list is padded with -1.
TOPK = np.array([
    [3, 1, 4, 0, 2],   # target 4 at rank 3
    [7, 5, 6, 8, 9],   # target 0 absent
    [2, 9, -1, -1, -1],  # target 2 at rank 1
])
TARGETS = np.array([4, 0, 2])


def test_target_ranks():
    assert target_ranks(TOPK, TARGETS).tolist() == [3, 0, 1]


def test_padding_is_never_a_hit():
    # a target of -1 must not "match" the padding
    assert target_ranks(np.array([[5, -1]]), np.array([-1])).tolist() == [0]


def test_hr_ndcg_mrr_by_hand():
    ranks = np.array([3, 0, 1])
    # HR@1: only user 2 (rank 1) -> [0, 0, 1]; HR@5: ranks 3 and 1 -> [1, 0, 1]
    assert hit_rate(ranks, 1).tolist() == [0, 0, 1]
    assert hit_rate(ranks, 5).tolist() == [1, 0, 1]
    # NDCG@5: rank 3 -> 1/log2(4) = 0.5; rank 1 -> 1/log2(2) = 1
    np.testing.assert_allclose(ndcg(ranks, 5), [0.5, 0.0, 1.0])
    # NDCG@2: rank 3 falls outside -> 0
    np.testing.assert_allclose(ndcg(ranks, 2), [0.0, 0.0, 1.0])
    # NDCG at rank 2 = 1/log2(3) = 0.63093
    np.testing.assert_allclose(ndcg(np.array([2]), 10), [1 / math.log2(3)])
    # MRR: 1/3, 0, 1; MRR@2: rank 3 outside -> 0
    np.testing.assert_allclose(mrr(ranks), [1 / 3, 0.0, 1.0])
    np.testing.assert_allclose(mrr(ranks, 2), [0.0, 0.0, 1.0])


def test_accuracy_means_and_per_user():
    r = accuracy(TOPK, TARGETS, ks=(1, 5))
    # HR@1 = 1/3, HR@5 = 2/3, NDCG@5 = (0.5 + 0 + 1)/3 = 0.5, MRR = (1/3 + 0 + 1)/3 = 4/9
    assert r.means["HR@1"] == pytest.approx(1 / 3)
    assert r.means["HR@5"] == pytest.approx(2 / 3)
    assert r.means["NDCG@5"] == pytest.approx(0.5)
    assert r.means["NDCG@1"] == pytest.approx(1 / 3)
    assert r.means["MRR@5"] == pytest.approx(4 / 9)
    assert "MRR" not in r.means  # every MRR names its cut-off
    assert r.means["MRR@1"] == pytest.approx(1 / 3)
    assert r.per_user["NDCG@5"].tolist() == [0.5, 0.0, 1.0]
    assert set(r.means) == set(r.per_user)


def test_accuracy_rejects_cutoff_wider_than_lists():
    with pytest.raises(ValueError, match="wider"):
        accuracy(TOPK, TARGETS, ks=(10,))


def test_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError):
        accuracy(TOPK.astype(float), TARGETS)
    with pytest.raises(ValueError):
        accuracy(TOPK, TARGETS[:2])


def test_coverage_by_hand():
    # @2: {3,1} ∪ {7,5} ∪ {2,9} = 6 distinct items of 20 -> 0.3
    assert coverage(TOPK, 20, 2) == pytest.approx(0.3)
    # @5: {3,1,4,0,2} ∪ {7,5,6,8,9} ∪ {2,9} = 10 distinct (padding ignored) -> 0.5
    assert coverage(TOPK, 20, 5) == pytest.approx(0.5)


def test_jaccard_distance_by_hand():
    # {a,b} vs {b,c}: |∩| = 1, |∪| = 3 -> 1 - 1/3
    assert jaccard_distance({"a", "b"}, {"b", "c"}) == pytest.approx(2 / 3)
    assert jaccard_distance({"a"}, {"a"}) == 0.0
    assert jaccard_distance(set(), set()) == 0.0
    assert jaccard_distance({"a"}, set()) == 1.0


def test_ild_attributes_by_hand():
    attrs = [["a", "b"], ["b", "c"], ["a"], ["d"]]
    topk = np.array([[0, 1, 2], [3, -1, -1]])
    r = intra_list_diversity(topk, 3, attributes=attrs)
    # user 0 pairs: (0,1): 1 - 1/3 = 2/3; (0,2): {a,b} vs {a} = 1 - 1/2 = 1/2; (1,2): disjoint -> 1
    # mean = (2/3 + 1/2 + 1)/3 = 13/18; user 1 has one item -> NaN, left out of the mean
    assert r.per_user["ILD@3"][0] == pytest.approx(13 / 18)
    assert math.isnan(r.per_user["ILD@3"][1])
    assert r.means["ILD@3"] == pytest.approx(13 / 18)


def test_ild_embeddings_by_hand():
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    # cos(0,1) = 0 -> 1; cos(0,2) = 1/sqrt2 -> 1 - 0.7071; cos(1,2) = 1/sqrt2 -> 1 - 0.7071
    expected = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    r = intra_list_diversity(np.array([[0, 1, 2]]), 3, embeddings=emb)
    assert r.means["ILD@3"] == pytest.approx(expected)
    # @2 reads only items 0 and 1 -> 1
    assert intra_list_diversity(np.array([[0, 1, 2]]), 2, embeddings=emb).means["ILD@2"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        intra_list_diversity(np.array([[0, 1]]), 2)


def test_self_information_and_novelty_by_hand():
    counts = np.array([8, 4, 1, 0])
    # num_users = 8: -log2(8/8) = 0, -log2(4/8) = 1, -log2(1/8) = 3, zero popularity counts as 1 -> 3
    np.testing.assert_allclose(self_information(counts, 8), [0, 1, 3, 3])
    # more counts than users (repeats) clip to 0, never negative
    assert self_information(np.array([20]), 8)[0] == 0.0
    r = novelty(np.array([[0, 1], [2, -1]]), counts, 8, 2)
    # user 0: (0 + 1)/2 = 0.5; user 1: only item 2 -> 3; mean = 1.75
    np.testing.assert_allclose(r.per_user["Novelty@2"], [0.5, 3.0])
    assert r.means["Novelty@2"] == pytest.approx(1.75)


def test_popularity_bias_by_hand():
    counts = np.array([5, 9, 1, 9, 0, 2, 3, 4, 0, 0, 7, 1])  # 12 items -> top 10% = ceil(1.2) = 2 items
    # the two most popular: items 1 and 3 (both 9; ties by index)
    assert popular_items(counts).tolist() == [1, 3]
    topk = np.array([[1, 0, 3, 2], [4, 5, -1, -1]])
    r = popularity_bias(topk, counts, 4)
    # user 0: items 1 and 3 popular of 4 -> 0.5; user 1: 0 of 2 -> 0; mean 0.25
    np.testing.assert_allclose(r.per_user["PopBias@4"], [0.5, 0.0])
    assert r.means["PopBias@4"] == pytest.approx(0.25)


def test_beyond_accuracy_bundle():
    counts = np.array([8, 4, 1, 0])
    r = beyond_accuracy(np.array([[0, 1], [2, 3]]), counts, 8, k=2, attributes=[["a"], ["a"], ["b"], []])
    # coverage 4/4; novelty (0.5 + 3)/2; top-10% of 4 items = 1 item (item 0) -> (1/2 + 0)/2; ILD (0 + 1)/2
    assert r.means == pytest.approx({"Coverage@2": 1.0, "Novelty@2": 1.75, "PopBias@2": 0.25, "ILD@2": 0.5})


def test_validity_by_hand():
    # ints against num_items = 5: 4 valid of 6 (7 out of range, -1 invalid)
    assert validity([[0, 4, 7], [1, -1, 2]], 5) == pytest.approx(4 / 6)
    # strings against a catalogue set: 2 of 3
    assert validity([["a", "zz"], ["b"]], {"a", "b", "c"}) == pytest.approx(2 / 3)
    assert math.isnan(validity([[], []], 5))
    assert validity([[True]], 5) == 0.0  # a bool is not an item id


def test_paired_significance():
    a = np.array([0.5, 1.0, 0.0, 0.63, 0.3, 0.8])
    b = np.array([0.0, 0.5, 0.0, 0.5, 0.0, 0.4])
    r = paired_significance(a, b)
    from scipy import stats

    assert r.n == 6
    assert r.mean_diff == pytest.approx(np.mean(a - b))
    assert r.t_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert r.t_statistic > 0
    same = paired_significance(a, a.copy())
    assert (same.t_pvalue, same.wilcoxon_pvalue, same.mean_diff) == (1.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        paired_significance(a, b[:3])


def test_format_table():
    table = format_table({"pop": {"HR@10": 0.08594, "NDCG@10": 0.0449, "fit_s": 1},
                          "bpr": {"HR@10": 0.1, "NDCG@10": math.nan}}, digits=3)
    assert table.splitlines() == [
        "| model | HR@10 | NDCG@10 | fit_s |",
        "|---|---:|---:|---:|",
        "| pop | 0.086 | 0.045 | 1 |",
        "| bpr | 0.100 | nan | - |",
    ]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_metric_bounds_and_monotonicity(n_users, width, seed):
    rng = np.random.default_rng(seed)
    n_items = 12
    topk = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    targets = rng.integers(0, n_items, n_users)
    ks = tuple(range(1, width + 1))
    r = accuracy(topk, targets, ks)
    for k in ks:
        assert 0 <= r.means[f"NDCG@{k}"] <= r.means[f"HR@{k}"] <= 1
        assert r.means[f"MRR@{k}"] <= r.means[f"NDCG@{k}"] + 1e-12
        if k > 1:
            assert r.means[f"HR@{k}"] >= r.means[f"HR@{k - 1}"]


def test_the_worked_example_of_a_new_metric():
    """docs/evaluation.md's "Adding a metric" example runs as written (its function, then its test)."""
    import re

    from helpers import REPO

    import generative_rec.evaluation.metrics as metrics_module

    text = (REPO / "docs" / "evaluation.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    metric = next(b for b in blocks if b.startswith("# generative_rec/evaluation/metrics.py"))
    test = next(b for b in blocks if b.startswith("# tests/unit/test_metrics.py"))
    ns = dict(vars(metrics_module))
    exec(metric, ns)
    exec(test, ns)
    ns["test_gini"]()
    assert ns["gini"](np.array([[0, 0]]), num_items=1, k=2).means["Gini@2"] == 0.0
