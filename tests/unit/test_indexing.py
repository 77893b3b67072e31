"""Every registered item-ID scheme keeps the index contract on a small synthetic catalogue.

Contract: one ID per item, no two equal, prefix-free after tokenisation with a real tokenizer (a byte-level
BPE trained here in milliseconds; the SmolLM2 tokenizer in tests/slow/test_indexing_smollm2.py), item -> ID
-> item round trip through the trie, deterministic for a fixed seed, and no leakage: IDs of schemes that read
interactions depend on the training part only.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from generative_rec.data.dataset import RecData
from generative_rec.data.prepare import PrepareConfig, prepare
from generative_rec.errors import ConfigError
from generative_rec.indexing import (
    SCHEME_OPTIONS,
    SCHEMES,
    IndexConfig,
    ItemIndex,
    build_index,
    scheme_options,
)
from generative_rec.indexing.semantic import build_from_embeddings, default_codebook_size
from generative_rec.indexing.title import unique_titles
from generative_rec.options import NoOptions, values

# Titles chosen to break naive title IDs: prefixes of each other, duplicates, quotes, odd spacing, digits.
TRICKY = ["Heat", "Heat Wave", "Heat", "Heat  Wave ", 'The "Quoted" One', "The ", "2001", "200", "Heat [i2]"]


def write_catalogue(folder: Path, sequences: dict[str, list[int]], n_items: int) -> Path:
    """Write an item table and an interaction table (one row per (user, position))."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.jsonl", "w") as f:
        for i in range(n_items):
            title = TRICKY[i] if i < len(TRICKY) else f"Item {i} ({1950 + i % 50})"
            f.write(json.dumps({"item_id": f"i{i}", "title": title, "genre": f"g{i % 5} g{i % 3}"}) + "\n")
    with open(folder / "inter.csv", "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u, seq in sequences.items():
            for pos, i in enumerate(seq):
                f.write(f"{u},i{i},{1000 * int(u[1:]) + pos}\n")
    return folder


def prepared(tmp: Path, sequences: dict[str, list[int]], n_items: int) -> RecData:
    src = write_catalogue(tmp / "raw", sequences, n_items)
    out = prepare(PrepareConfig(source="table", output=str(tmp / "data"), attribute_field="genre", table={
        "path": str(src / "inter.csv"), "items_path": str(src / "items.jsonl"), "item_fields": ["genre"]}))
    return RecData(out)


N_ITEMS = 60
TEST_ONLY = (57, 58, 59)  # items that occur only as validation/test targets


def base_sequences() -> dict[str, list[int]]:
    """20 users; two communities (items 0-28 and 29-56) so collaborative IDs have structure to find."""
    rng = np.random.default_rng(7)
    seqs = {}
    for u in range(20):
        lo, hi = (0, 29) if u % 2 == 0 else (29, 57)
        seqs[f"u{u}"] = [int(x) for x in rng.choice(np.arange(lo, hi), size=int(rng.integers(6, 14)), replace=False)]
    used = {i for s in seqs.values() for i in s}
    for i in range(57):  # every item must be in the catalogue: give unused ones to a user of their community
        if i not in used:
            seqs[f"u{(i % 10) * 2 + (i >= 29)}"].insert(0, i)
    return seqs


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> RecData:
    seqs = base_sequences()
    seqs["u0"] += [57, 58]  # 58 is u0's test target, 57 its validation target
    seqs["u1"] += [3, 59]
    return prepared(tmp_path_factory.mktemp("cat"), seqs, N_ITEMS)


@pytest.fixture(scope="module")
def embeddings_file(tmp_path_factory, data) -> str:
    path = tmp_path_factory.mktemp("emb") / "emb.npy"
    np.save(path, np.random.default_rng(0).normal(size=(data.num_items, 24)).astype(np.float32))
    return str(path)


def options(scheme: str, emb: str) -> dict:
    return {"semantic": {"embeddings": emb, "codebook_size": 4}, "collaborative": {"k": 4, "window": 3}}.get(scheme, {})


def bpe_tokenizer(texts: list[str], new_tokens: list[str]):
    """A byte-level BPE (digits split one per token, as in SmolLM2) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts * 3, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    tok.add_tokens(new_tokens)
    return tok


def check_contract(index: ItemIndex, data: RecData, tok) -> None:
    assert index.item_ids == list(data.item_ids)
    assert len(set(index.id_texts)) == len(index) == data.num_items
    assert all(index.id_texts)
    assert set(index.token_items) == set(index.new_tokens)
    assert all(0 <= i < data.num_items for items in index.token_items.values() for i in items)
    trie = index.build_trie(tok)  # raises TrieError on duplicate / prefix-related token sequences
    for i, seq in enumerate(index.token_ids(tok)):
        assert trie.item_of(seq) == i
        assert trie.sequence(i) == seq


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_scheme_contract(scheme, data, embeddings_file, tmp_path):
    index = build_index(data, IndexConfig(scheme=scheme, seed=3, options=options(scheme, embeddings_file)))
    tok = bpe_tokenizer([*data.titles, *index.id_texts], index.new_tokens)
    check_contract(index, data, tok)
    index.save(tmp_path / "index.json")
    back = ItemIndex.load(tmp_path / "index.json")
    assert back.id_texts == index.id_texts and back.new_tokens == index.new_tokens
    # the saved options stay the plain mapping given, and still convert to the scheme's options
    assert back.meta["options"] == options(scheme, embeddings_file)
    scheme_options(back.scheme, back.meta["options"])


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_scheme_deterministic(scheme, data, embeddings_file):
    cfg = IndexConfig(scheme=scheme, seed=5, options=options(scheme, embeddings_file))
    a, b = build_index(data, cfg), build_index(data, cfg)
    assert a.id_texts == b.id_texts and a.new_tokens == b.new_tokens and a.token_items == b.token_items


def test_random_ids_depend_on_seed_only(data):
    a = build_index(data, IndexConfig(scheme="random", seed=0))
    b = build_index(data, IndexConfig(scheme="random", seed=1))
    assert a.id_texts != b.id_texts
    assert len({len(t) for t in a.id_texts}) == 1 and all(t.isdigit() for t in a.id_texts)


def test_title_rule(data):
    index = build_index(data, IndexConfig(scheme="title"))
    ids = index.id_texts
    assert all(t.startswith('"') and t.endswith('"') and '"' not in t[1:-1] for t in ids)
    assert ids[1] == '"Heat Wave [i1]"' and ids[3] == '"Heat Wave [i3]"'  # equal after whitespace cleanup
    assert ids[0] == '"Heat [i0]"' and ids[8] == '"Heat [i2]"' and ids[2] == '"Heat [i2#2]"'
    assert ids[4] == "\"The 'Quoted' One\"" and ids[5] == '"The"'
    assert ids[10] == '"Item 10 (1960)"'  # unique titles are kept as they are
    # a disambiguated name that is already someone's title gets a further suffix
    assert unique_titles(["A", "A", "A [x]"], ["x", "y", "z"]) == ["A [x#2]", "A [y]", "A [x]"]
    assert unique_titles(["", "B"], ["id 7", "x"]) == ["id 7", "B"]


def test_semantic_from_array_and_callable(data):
    emb = np.random.default_rng(1).normal(size=(data.num_items, 16))
    cfg = IndexConfig(scheme="semantic", seed=0, options={"codebook_size": 4, "levels": 2})
    a = build_from_embeddings(data, cfg, emb)
    b = build_from_embeddings(data, cfg, lambda texts: emb)  # run-time inputs: not index.options
    assert a.id_texts == b.id_texts and b.meta["embedding_source"] == "callable"
    # 60 items, 4 x 4 codes: collisions must be resolved by a <c_n> disambiguation token
    assert any("<c_" in t for t in a.id_texts) and a.meta["max_shared"] > 1
    assert a.token_items.get("<c_0>") == []
    assert all(len(a.token_items[f"<a_{j}>"]) for j in range(4))
    for text, codes in zip(a.id_texts, a.meta["codes"], strict=True):
        assert [int(c) for c in re.findall(r"_(\d+)>", text)] == codes


def test_semantic_groups_similar_embeddings(data):
    """Items whose embeddings are near copies of each other share their first code."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 8)) * 10
    emb = centres[np.arange(data.num_items) % 4] + rng.normal(size=(data.num_items, 8)) * 0.1
    index = build_from_embeddings(data, IndexConfig("semantic", 0, {"codebook_size": 4}), emb)
    first = [t.split(">")[0] for t in index.id_texts]
    for i in range(data.num_items):
        assert first[i] == first[i % 4]
    assert len(set(first)) == 4


def test_semantic_encode_matches_saved_codebooks(data, tmp_path):
    from generative_rec.indexing.semantic import encode

    emb = np.random.default_rng(3).normal(size=(data.num_items, 12))
    path = tmp_path / "books.npz"
    index = build_from_embeddings(data, IndexConfig("semantic", 0, {"codebook_size": 8, "levels": 2,
                                                                     "unique_last_level": False,
                                                                     "codebooks_path": str(path)}), emb)
    codes = encode(emb, dict(np.load(path)))
    assert codes.tolist() == [c[:2] for c in index.meta["codes"]]


def test_default_codebook_size():
    assert default_codebook_size(1682, 3) == 32
    assert default_codebook_size(10, 3) == 8
    assert default_codebook_size(10**7, 3) == 256


# ------------------------------------------------------------------------------------------------ options
# The defaults the schemes read with ``cfg.options.get(key, default)`` before they had options classes.
PREVIOUS_DEFAULTS = {
    "atomic": {"format": "<item_{n}>"},
    "sequential": {"start": 1},
    "random": {"width": None},  # None: one digit more than the catalogue needs
    "collaborative": {"k": 32, "window": 10},
    "semantic": {"embeddings": None, "encoder": "minilm", "model_path": None, "levels": 3,
                 "codebook_size": None, "pca_dim": 64, "iters": 50, "unique_last_level": True,
                 "codebooks_path": None},  # codebook_size None: default_codebook_size(n, levels)
    "title": {},
}


def test_every_scheme_has_options_with_the_previous_defaults():
    assert set(SCHEME_OPTIONS) == set(SCHEMES) == set(PREVIOUS_DEFAULTS)
    for scheme in SCHEMES:
        assert values(scheme_options(scheme, {})) == PREVIOUS_DEFAULTS[scheme], scheme
        assert values(scheme_options(scheme, None)) == PREVIOUS_DEFAULTS[scheme], scheme


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_unknown_scheme_option_is_an_error(scheme, data):
    with pytest.raises(ConfigError, match="levls") as e:
        IndexConfig(scheme=scheme, options={"levls": 3})
    if SCHEME_OPTIONS[scheme] is NoOptions:
        assert "takes no options" in str(e.value)
    else:
        assert "known:" in str(e.value) and scheme in str(e.value)
    cfg = IndexConfig(scheme=scheme)
    cfg.options = {"levls": 3}  # changed after construction: build_index checks again
    with pytest.raises(ConfigError, match="levls"):
        build_index(data, cfg)
    with pytest.raises(ConfigError, match="levls"):
        SCHEMES[scheme](data, cfg)


@pytest.mark.parametrize("scheme, key, value", [
    ("semantic", "levels", "3"), ("semantic", "codebook_size", 4.5), ("semantic", "unique_last_level", "no"),
    ("semantic", "embeddings", 5), ("collaborative", "k", 3.0), ("collaborative", "window", True),
    ("sequential", "start", "1"), ("random", "width", [4]), ("atomic", "format", 7)])
def test_wrong_option_type_is_an_error(scheme, key, value):
    with pytest.raises(ConfigError, match=f"index.options.{key}"):
        IndexConfig(scheme=scheme, options={key: value})


def test_options_are_converted_and_used(data):
    o = scheme_options("semantic", {"levels": 2, "pca_dim": None, "codebook_size": 4})
    assert (o.levels, o.pca_dim, o.codebook_size, o.iters) == (2, None, 4, 50)
    assert scheme_options("collaborative", {"k": 4}).window == 10
    index = build_index(data, IndexConfig(scheme="atomic", options={"format": "<it{n}>"}))
    assert index.id_texts[:2] == ["<it0>", "<it1>"] and index.meta["options"] == {"format": "<it{n}>"}
    assert build_index(data, IndexConfig(scheme="random", options={"width": 4})).meta["width"] == 4
    assert build_index(data, IndexConfig(scheme="random")).meta["width"] == 3  # 60 items: 2 digits + 1
    assert build_index(data, IndexConfig(scheme="sequential", options={"start": 100})).id_texts[0] >= "100"


def test_unknown_scheme_and_config_loading():
    from generative_rec.config import load_config

    with pytest.raises(ConfigError, match="unknown ID scheme"):
        IndexConfig(scheme="semantik")
    with pytest.raises(ConfigError, match="levls"):
        load_config(None, ["index.scheme=semantic", "index.options.levls=3"])
    with pytest.raises(ConfigError, match="index.options"):
        load_config(None, ["index.scheme=semantic", "index.options=3"])
    cfg = load_config(None, ["index.scheme=semantic", "index.options.levels=2"])
    assert cfg.index.options == {"levels": 2}  # stays a plain mapping (YAML, bundles)
    for path in sorted((Path(__file__).parents[2] / "train" / "configs").glob("*.yaml")):
        cfg = load_config(path)
        scheme_options(cfg.index.scheme, cfg.index.options)


def test_index_help_lists_every_scheme_option(capsys):
    from generative_rec.cli import main

    with pytest.raises(SystemExit):
        main(["index", "--help"])
    out = capsys.readouterr().out
    for scheme, cls in SCHEME_OPTIONS.items():
        assert f"  {scheme}:" in out
        for f in fields(cls):
            assert f"    {f.name}: " in out, (scheme, f.name)


# ------------------------------------------------------------------------------------------------ leakage
@pytest.mark.parametrize("scheme", ["sequential", "collaborative"])
def test_ids_ignore_validation_and_test_items(scheme, tmp_path):
    """Moving test-only items to other users/positions and changing validation items changes no ID."""
    variants = []
    for swap in (False, True):
        seqs = base_sequences()
        a, b = ([57, 58], [3, 59]) if not swap else ([59, 3], [58, 57])  # (validation, test) per user
        seqs["u0"] += a
        seqs["u1"] += b
        variants.append(prepared(tmp_path / str(swap), seqs, N_ITEMS))
    d0, d1 = variants
    assert [list(s) for s in d0.train_sequences()] == [list(s) for s in d1.train_sequences()]
    assert [list(s) for s in d0.sequences] != [list(s) for s in d1.sequences]
    assert all(d0.train_counts[i] == 0 for i in TEST_ONLY)
    cfg = IndexConfig(scheme=scheme, options=options(scheme, ""))
    i0, i1 = build_index(d0, cfg), build_index(d1, cfg)
    assert i0.id_texts == i1.id_texts


def test_collaborative_ids_follow_training_communities(data):
    """Sanity check that the leakage test is not vacuous: collaborative IDs do use training data, and the
    two communities of the fixture end up under different first tokens; test-only items are cold."""
    index = build_index(data, IndexConfig(scheme="collaborative", options={"k": 4, "window": 3}))
    first = [t.split(">")[0] + ">" for t in index.id_texts]
    cold = [i for i in range(data.num_items) if first[i] == "<c1_4>"]  # k = 4: the reserved code
    assert set(TEST_ONLY) <= set(cold) and index.meta["cold_items"] == len(cold)
    assert all(data.train_counts[i] == 0 for i in cold)  # in this fixture no item is seen only alone
    left = {first[i] for i in range(0, 29) if i not in cold}
    right = {first[i] for i in range(29, 57) if i not in cold}
    assert left and right and not left & right
    assert len({len(index.token_ids(bpe_tokenizer(index.id_texts, index.new_tokens))[i])
                for i in range(data.num_items)}) == 1  # fixed depth

