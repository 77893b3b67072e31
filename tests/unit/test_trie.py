"""Property tests of the item trie: every walk it allows ends at a catalogue item, and nothing is lost.

Catalogues are random prefix-free sets of token sequences (small alphabets, so prefixes are shared a lot);
expected answers are computed by brute force from the raw sequences.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generative_rec.trie import Trie, TrieError

SEQ = st.lists(st.integers(0, 6), min_size=1, max_size=5)


def prefix_free(seqs: list[list[int]]) -> list[list[int]]:
    """Drop duplicates and every sequence that is a strict prefix of another (keeps input order)."""
    uniq = list(dict.fromkeys(tuple(s) for s in seqs))
    keep = [s for s in uniq if not any(len(o) > len(s) and o[: len(s)] == s for o in uniq)]
    return [list(s) for s in keep]


catalogues = st.lists(SEQ, min_size=1, max_size=40).map(prefix_free)


def next_tokens(seqs: list[list[int]], prefix: list[int]) -> set[int]:
    n = len(prefix)
    return {s[n] for s in seqs if len(s) > n and s[:n] == prefix}


@settings(max_examples=200, deadline=None)
@given(catalogues, st.randoms(use_true_random=False))
def test_random_walk_ends_at_catalogue_item(seqs, rnd):
    trie = Trie.build(seqs)
    for _ in range(5):
        node, path = Trie.ROOT, []
        while len(trie.allowed(node)):
            tok = int(rnd.choice(list(trie.allowed(node))))
            node = trie.child(node, tok)
            assert node > 0
            path.append(tok)
        item = trie.item_at(node)
        assert trie.is_leaf(node) and item >= 0
        assert seqs[item] == path


@settings(max_examples=200, deadline=None)
@given(catalogues)
def test_item_sequence_round_trip(seqs):
    trie = Trie.build(seqs)
    assert trie.num_items == len(seqs)
    for i, s in enumerate(seqs):
        assert trie.item_of(s) == i
        assert trie.sequence(i) == s
    # inner nodes name no item; paths leaving the trie name none either
    for s in seqs:
        for n in range(len(s)):
            assert trie.item_of(s[:n]) == -1
        assert trie.item_of([*s, 0]) == -1


@settings(max_examples=200, deadline=None)
@given(catalogues, st.lists(st.lists(st.integers(0, 7), max_size=5), min_size=1, max_size=10))
def test_allowed_matches_brute_force(seqs, extra_prefixes):
    trie = Trie.build(seqs)
    prefixes = [s[:n] for s in seqs for n in range(len(s) + 1)] + extra_prefixes
    for p in prefixes:
        expected = next_tokens(seqs, p)
        got = trie.allowed_after(p)
        assert list(got) == sorted(expected)
        node = trie.walk(p)
        if node >= 0:
            assert list(trie.allowed(node)) == sorted(expected)
            for t in range(8):
                assert (trie.child(node, t) >= 0) == (t in expected)


@settings(max_examples=200, deadline=None)
@given(catalogues, st.data())
def test_exclusion_never_reaches_excluded_and_loses_nothing(seqs, data):
    trie = Trie.build(seqs)
    excluded = set(data.draw(st.lists(st.integers(0, len(seqs) - 1), max_size=len(seqs))))
    banned = trie.exclusion(excluded)
    live = [s for i, s in enumerate(seqs) if i not in excluded]
    for p in {tuple(s[:n]) for s in seqs for n in range(len(s))}:
        node = trie.walk(p)
        expected = sorted(next_tokens(live, list(p)))
        assert list(trie.allowed_excluding(node, banned)) == expected
        toks, kids = trie.allowed_mask_excluding(node, banned)
        assert list(toks) == expected
        assert [trie.child(node, int(t)) for t in toks] == list(kids)
    # every constrained walk ends at a non-excluded item, and every such item is reachable
    reached: set[int] = set()
    stack = [Trie.ROOT] if live else []
    while stack:
        node = stack.pop()
        if trie.is_leaf(node):
            reached.add(trie.item_at(node))
            continue
        toks = trie.allowed_excluding(node, banned)
        assert len(toks) > 0  # never stuck at an inner node
        stack.extend(trie.child(node, int(t)) for t in toks)
    assert reached == set(range(len(seqs))) - excluded


@settings(max_examples=100, deadline=None)
@given(catalogues, st.data())
def test_duplicates_and_prefixes_raise(seqs, data):
    i = data.draw(st.integers(0, len(seqs) - 1))
    with pytest.raises(TrieError):
        Trie.build([*seqs, list(seqs[i])])  # duplicate
    s = seqs[i]
    if len(s) > 1:
        cut = data.draw(st.integers(1, len(s) - 1))
        with pytest.raises(TrieError):
            Trie.build([*seqs, s[:cut]])  # a strict prefix of an existing ID
    with pytest.raises(TrieError):
        Trie.build([*seqs, [*s, 3]])  # an extension of an existing ID


def test_invalid_inputs_raise():
    with pytest.raises(TrieError):
        Trie.build([])
    with pytest.raises(TrieError):
        Trie.build([[1, 2], []])
    with pytest.raises(TrieError):
        Trie.build([[1, -2]])
    with pytest.raises(TrieError):
        Trie.build([[1, 2], [1, -1]])  # -1 is the internal padding value: still rejected
    with pytest.raises(TrieError):
        Trie.build([[2**40]])
    with pytest.raises(TrieError):
        Trie.build(np.array([[1, 2**40]]))
    with pytest.raises(TrieError, match="same ID"):
        Trie.build([[1, 2], [3], [1, 2]])
    with pytest.raises(TrieError, match="prefix"):
        Trie.build([[1, 2, 3], [1, 2]])


@settings(max_examples=50, deadline=None)
@given(catalogues)
def test_save_load_round_trip(tmp_path_factory, seqs):
    trie = Trie.build(seqs)
    path = tmp_path_factory.mktemp("trie") / "trie.npz"
    trie.save(path)
    back = Trie.load(path)
    assert back.num_items == trie.num_items and back.num_nodes == trie.num_nodes
    for name in ("token", "parent", "first_child", "leaf_item", "item_leaf", "count", "level_offsets"):
        assert np.array_equal(getattr(back, name), getattr(trie, name)), name
    for i, s in enumerate(seqs):
        assert back.item_of(s) == i


def test_fixed_width_array_input_matches_lists():
    rng = np.random.default_rng(0)
    a = np.unique(rng.integers(0, 5, size=(300, 4)), axis=0)
    rng.shuffle(a)
    t1, t2 = Trie.build(a), Trie.build(a.tolist())
    assert np.array_equal(t1.token, t2.token) and np.array_equal(t1.item_leaf, t2.item_leaf)
    assert all(t1.item_of(row) == i for i, row in enumerate(a.tolist()))


@settings(max_examples=100, deadline=None)
@given(catalogues)
def test_wide_token_ids_take_the_lexsort_path(seqs):
    """Token ids too large to pack a row into 64 bits give the same trie (up to renaming)."""
    big = [[t * 10**8 + 7 for t in s] for s in seqs]
    small, wide = Trie.build(seqs), Trie.build(big)
    assert np.array_equal(small.item_leaf, wide.item_leaf)
    assert np.array_equal(small.token[1:].astype(np.int64) * 10**8 + 7, wide.token[1:])
    for i, s in enumerate(big):
        assert wide.item_of(s) == i
