"""Catalogue changes without retraining (generative_rec/catalogue.py): adding items (title and semantic IDs),
refusing schemes that cannot code a new item, hiding and unhiding, errors that change nothing on disk, and
versions written so that an interrupted write leaves the previous one current."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import load_tiny

from generative_rec.bundle import Bundle
from generative_rec.catalogue import (
    CatalogueError,
    NewItem,
    add_items,
    current_version,
    hide_items,
    load_catalogue,
    pointer_path,
    read_new_items,
    unhide_items,
    version_dir,
)
from generative_rec.errors import DataError
from generative_rec.indexing.base import ItemIndex


def _train(tiny_data: Path, out: Path, **index) -> Path:
    from generative_rec.training import train

    return Path(train(load_tiny(tiny_data, out, index=index, prompts={"tasks": {"next_item": 1.0}},
                                train={"max_steps": 2, "eval_users": 2})))


@pytest.fixture(scope="module")
def title_trained(tmp_path_factory, tiny_data) -> Path:
    return _train(tiny_data, tmp_path_factory.mktemp("title") / "bundle", scheme="title")


@pytest.fixture(scope="module")
def semantic_trained(tmp_path_factory, tiny_data) -> tuple[Path, np.ndarray]:
    """Semantic IDs from fixed random embeddings (2 levels of 4 codes for 40 items: many shared codes)."""
    tmp = tmp_path_factory.mktemp("semantic")
    emb = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    np.save(tmp / "emb.npy", emb)
    b = _train(tiny_data, tmp / "bundle", scheme="semantic",
               options={"embeddings": str(tmp / "emb.npy"), "levels": 2, "codebook_size": 4})
    return b, emb


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def snapshot(bundle: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in sorted(bundle.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def items(n: int, start: int = 0) -> list[NewItem]:
    return [NewItem(f"new{start + i}", f"Brand New Film {start + i} (2031)", attributes=("Drama",))
            for i in range(n)]


# ------------------------------------------------------------------------------------------- title IDs
def test_add_title_items_appends_rows_and_keeps_old_ones(title_trained, tmp_path):
    path = copy_of(title_trained, tmp_path)
    before = Bundle(path)
    cat = add_items(path, items(5))
    assert cat.version == 1 and current_version(path) == 1
    after = Bundle(path)
    n = before.num_items
    assert after.catalogue_version == 1 and after.num_items == n + 5
    assert after.item_ids[:n] == before.item_ids and after.item_ids[n:] == [f"new{i}" for i in range(5)]
    assert after.index.id_texts[n] == '"Brand New Film 0 (2031)"' and after.titles[n] == "Brand New Film 0 (2031)"
    assert all(after.trie.sequence(i) == before.trie.sequence(i) for i in range(n))  # stable rows and IDs
    assert after.texts[n] == "Brand New Film 0 (2031). attributes: Drama"
    after.check_tokenizer()  # the served tokenizer reproduces every ID, old and new
    assert after.lookup(["new3", "Brand New Film 4 (2031)"]) == [n + 3, n + 4]
    assert Bundle(path, catalogue_version=0).item_ids == before.item_ids  # version 0 is untouched
    add_items(path, items(2, start=5))
    assert Bundle(path).num_items == n + 7 and Bundle(path, 1).num_items == n + 5


def test_title_collision_and_duplicates_change_nothing(title_trained, tmp_path):
    path = copy_of(title_trained, tmp_path)
    b = Bundle(path)
    disk = snapshot(path)
    cases = [
        ([NewItem("x1", b.titles[7])], "already the ID of item"),  # same title as an existing item
        ([NewItem("x1", "Twin (2031)"), NewItem("x2", "Twin  (2031)")], "already the ID of item 'x1'"),
        ([NewItem(b.item_ids[0], "Fresh (2031)")], "already in the catalogue"),
        ([NewItem("x1", "A (2031)"), NewItem("x1", "B (2031)")], "given twice"),
    ]
    for new, message in cases:
        with pytest.raises(CatalogueError, match=message):
            add_items(path, new)
    assert snapshot(path) == disk
    assert current_version(path) == 0


def test_read_new_items_names_the_bad_line(tmp_path):
    f = tmp_path / "items.jsonl"
    good = json.dumps({"item_id": "a", "title": "A", "text": "about A", "attributes": ["x"]})
    for lines, message in [
        ([good, "{not json"], r"items.jsonl:2: not a JSON object"),
        ([good, json.dumps({"item_id": "b"})], r":2: title must be a non-empty string"),
        ([json.dumps({"item_id": "a", "title": "A", "price": 3})], r":1: unknown field\(s\) \['price'\]"),
        ([good, "", json.dumps({"item_id": "a", "title": "B"})], r":3: item id 'a' appears twice \(first on line 1\)"),
        ([json.dumps({"item_id": "a", "title": "A", "attributes": "x"})], r":1: attributes must be a list"),
        ([json.dumps([1, 2])], r":1: not a JSON object"),
        ([""], "no items"),
    ]:
        f.write_text("\n".join(lines) + "\n")
        with pytest.raises(DataError, match=message):
            read_new_items(f)
    f.write_text(good + "\n" + json.dumps({"item_id": 7, "title": " Seven "}) + "\n")
    assert read_new_items(f) == [NewItem("a", "A", "about A", ("x",)), NewItem("7", "Seven")]


# ------------------------------------------------------------------------------------------- refused schemes
def test_schemes_without_a_rule_for_new_items_refuse(tiny_bundle, tmp_path):
    path = copy_of(tiny_bundle, tmp_path)  # atomic IDs
    disk = snapshot(path)
    with pytest.raises(CatalogueError, match="atomic IDs are one new token per item, whose embedding only training"):
        add_items(path, items(1))
    assert snapshot(path) == disk


@pytest.mark.parametrize(("scheme", "why"), [
    ("atomic", "one new token per item"), ("random", "tell the model nothing"),
    ("collaborative", "a new item has no interactions"), ("sequential", "first appearance in the training"),
])
def test_every_refusal_says_why(scheme, why, tmp_path):
    from generative_rec.catalogue import Catalogue, new_id_texts
    from generative_rec.trie import Trie

    cat = Catalogue(0, ItemIndex(scheme, ["a"], ["1"]), Trie.build([[1]]), ["a"], ["A"], [""], [[]], np.zeros(1))
    with pytest.raises(CatalogueError, match=f"cannot add items to a bundle with {scheme} IDs without retraining: .*{why}"):
        new_id_texts(tmp_path, cat, items(1), None)


# ------------------------------------------------------------------------------------------- semantic IDs
def test_add_semantic_items_uses_only_existing_tokens(semantic_trained, tmp_path):
    trained, emb = semantic_trained
    path = copy_of(trained, tmp_path)
    assert (path / "index.npz").exists()  # the codebooks travel with the bundle
    before = Bundle(path)
    rng = np.random.default_rng(1)
    new_emb = emb[:12] + 0.01 * rng.normal(size=(12, emb.shape[1]))  # near existing items: crowded codes
    cat = add_items(path, items(12), embeddings=new_emb)
    after = Bundle(path)
    n = before.num_items
    vocab = set(before.index.new_tokens)
    assert cat.version == 1 and after.index.new_tokens == before.index.new_tokens
    for t in after.index.id_texts[n:]:
        toks = ["<" + p for p in t.split("<") if p]
        assert toks and all(x in vocab for x in toks), t
    assert len(set(after.index.id_texts)) == n + 12
    assert len(after.index.meta["codes"]) == n + 12
    after.check_tokenizer()
    with pytest.raises(CatalogueError, match=r"expected \(1, 16\)"):
        add_items(path, items(1, start=50), embeddings=np.zeros((1, 8)))
    with pytest.raises(CatalogueError, match="pass the new items' vectors"):  # a file source: no encoder to run
        add_items(path, items(1, start=50))


def test_semantic_extend_takes_a_free_id_or_none():
    from generative_rec.indexing.semantic import extend

    books = {"levels": np.asarray(2), "mean": np.zeros(2), "scale": np.ones(2), "proj": np.eye(2),
             "level0": np.asarray([[0.0, 0.0]]), "level1": np.asarray([[0.0, 0.0], [5.0, 0.0], [9.0, 9.0]])}

    def index(codes, tokens):
        ids = [f"i{n}" for n in range(len(codes))]
        return ItemIndex("semantic", ids, ids, tokens, meta={"levels": 2, "codes": codes})

    x = np.asarray([[0.1, 0.0]])  # nearest last-level code 0, then 1, then 2
    assert extend(index([[0, 1]], ["<a_0>", "<b_0>", "<b_1>"]), x, books) == [[0, 0]]  # free tuple
    # (0, 0) names one item without a d code: take the next free tuple
    assert extend(index([[0, 0]], ["<a_0>", "<b_0>", "<b_1>"]), x, books) == [[0, 1]]
    # (0, 0) is a disambiguated group with <c_2> free in the vocabulary
    grp = [[0, 0, 0], [0, 0, 1], [0, 1]]
    assert extend(index(grp, ["<a_0>", "<b_0>", "<b_1>", "<c_0>", "<c_1>", "<c_2>"]), x, books) == [[0, 0, 2]]
    # every existing code taken and no d token free: cannot be coded without new tokens
    assert extend(index(grp, ["<a_0>", "<b_0>", "<b_1>", "<c_0>", "<c_1>"]), x, books) == [[]]
    # two new items near each other: the second sees the first
    assert extend(index([[0, 1]], ["<a_0>", "<b_0>", "<b_1>", "<b_2>"]), np.vstack([x, x]), books) == [[0, 0], [0, 2]]


def test_semantic_cannot_encode_is_a_clear_error(semantic_trained, tmp_path, monkeypatch):
    trained, emb = semantic_trained
    path = copy_of(trained, tmp_path)
    disk = snapshot(path)
    import generative_rec.indexing.semantic as semantic

    monkeypatch.setattr(semantic, "extend", lambda index, e, books: [[] for _ in e])
    with pytest.raises(CatalogueError, match="cannot encode item 'new0' without retraining"):
        add_items(path, items(2), embeddings=emb[:2])
    assert snapshot(path) == disk


# ------------------------------------------------------------------------------------------- hide / unhide
def test_hide_and_unhide(tiny_bundle, tmp_path):
    from generative_rec.serving.request import RequestError, prepare

    path = copy_of(tiny_bundle, tmp_path)
    b = Bundle(path)
    hidden = b.item_ids[3:6]
    assert hide_items(path, hidden).version == 1
    h = Bundle(path)
    assert h.hidden == frozenset({3, 4, 5}) and h.num_items == b.num_items  # nothing deleted
    assert json.loads((version_dir(path, 1) / "hidden.json").read_text()) == {"hidden": hidden}
    p = prepare(h, [b.item_ids[0]], k=5, exclude_history=False)
    assert {3, 4, 5} <= set(p.exclude)
    with pytest.raises(RequestError, match="remain after exclusions"):
        prepare(h, [b.item_ids[0]], k=b.num_items - 2, exclude_history=False)
    assert unhide_items(path, [hidden[0]]).hidden == frozenset({4, 5})
    assert Bundle(path).hidden == frozenset({4, 5}) and Bundle(path, 1).hidden == frozenset({3, 4, 5})
    with pytest.raises(CatalogueError, match="unknown item id"):
        hide_items(path, ["no-such-item"])
    with pytest.raises(CatalogueError, match="whole catalogue"):
        hide_items(path, b.item_ids)
    assert current_version(path) == 2


# ------------------------------------------------------------------------------------------- atomic versions
def test_an_interrupted_write_leaves_the_previous_version(title_trained, tmp_path, monkeypatch):
    import generative_rec.catalogue as catalogue
    from generative_rec.trie import Trie

    path = copy_of(title_trained, tmp_path)
    add_items(path, items(2))
    disk = snapshot(path)

    def killed(self, p):
        raise KeyboardInterrupt  # as if the process died while writing the new version's trie

    with monkeypatch.context() as m:
        m.setattr(Trie, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            add_items(path, items(2, start=2))
    assert snapshot(path) == disk and Bundle(path).catalogue_version == 1

    with monkeypatch.context() as m:  # killed after the folder, before the pointer: the folder is ignored
        real = catalogue.atomic_write_json
        m.setattr(catalogue, "atomic_write_json",
                  lambda p, obj: (_ for _ in ()).throw(KeyboardInterrupt) if p == pointer_path(path) else real(p, obj))
        with pytest.raises(KeyboardInterrupt):
            hide_items(path, ["new0"])
    assert version_dir(path, 2).exists() and current_version(path) == 1 and Bundle(path).hidden == frozenset()
    assert hide_items(path, ["new1"]).version == 2  # the leftover folder is replaced
    assert Bundle(path).hidden == frozenset({Bundle(path).lookup(["new1"])[0]})


def test_bundle_keeps_its_consistency_check(title_trained, tmp_path):
    from generative_rec.bundle import BundleError

    path = copy_of(title_trained, tmp_path)
    add_items(path, items(1))
    lines = (version_dir(path, 1) / "catalogue.jsonl").read_text().splitlines()
    (version_dir(path, 1) / "catalogue.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BundleError, match="disagree"):
        Bundle(path)
    with pytest.raises(CatalogueError, match="no catalogue version 7"):
        load_catalogue(path, 7)


# ------------------------------------------------------------------------------------------- command line
def test_cli_add_hide_show(title_trained, tmp_path, capsys):
    from generative_rec.cli import main

    path = copy_of(title_trained, tmp_path)
    f = tmp_path / "items.jsonl"
    f.write_text("".join(json.dumps({"item_id": it.item_id, "title": it.title}) + "\n" for it in items(3)))
    main(["index", "--add-items", str(f), "--bundle", str(path)])
    assert "catalogue version 1: added 3 items" in capsys.readouterr().out
    main(["catalogue", "hide", str(path), "new0", "new2"])
    main(["catalogue", "show", str(path)])
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["version"] == 2 and shown["hidden"] == 2 and shown["added_items"] == 3
    with pytest.raises(SystemExit) as e:
        main(["catalogue", "add", str(path), str(f)])  # the same ids again
    assert e.value.code == 2 and "already in the catalogue" in capsys.readouterr().err
    for argv, message in ((["index"], "--data is required"), (["index", "--add-items", str(f)], "go together")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- server state swap
def test_service_reload_swaps_one_reference(title_trained, tmp_path):
    """``RecommendationService.reload`` (no engine: a stand-in for the width check) replaces the served state
    as a whole and leaves the old one untouched for requests in flight; a version the engine cannot serve is
    refused and the previous one stays."""
    import asyncio

    from generative_rec.errors import ConfigError
    from generative_rec.serving.app import RecommendationService, Served

    class Check:
        fail = False

        def check(self, max_k, max_beams, trie=None):
            if self.fail:
                raise ConfigError("too wide")

    path = copy_of(title_trained, tmp_path)
    svc = RecommendationService.__new__(RecommendationService)
    old = Bundle(path)
    tok = old.tokenizer
    svc.served, svc.max_k, svc.engine, svc.lora_request = Served(old, None), 10, None, None
    svc.topk = Check()

    async def run(fn):
        svc._reload_lock = asyncio.Lock()
        return await fn()

    assert asyncio.run(run(svc.reload)).reloaded is False
    add_items(path, items(4))
    info = asyncio.run(run(svc.reload))
    assert (info.version, info.items, info.reloaded) == (1, old.num_items + 4, True)
    assert svc.bundle is not old and svc.bundle.tokenizer is tok  # a new object sharing the tokenizer
    assert old.catalogue_version == 0 and len(old.item_ids) == info.items - 4  # in-flight state unchanged
    assert svc.bundle.lookup(["new3"]) == [info.items - 1]
    hide_items(path, ["new0"])
    svc.topk.fail = True
    with pytest.raises(ConfigError, match="too wide"):
        asyncio.run(run(svc.reload))
    assert svc.bundle.catalogue_version == 1 and svc.bundle.hidden == frozenset()
    svc.topk.fail = False
    assert asyncio.run(run(svc.reload)).hidden == 1


def test_a_killed_writer_leaves_the_previous_version(title_trained, tmp_path):
    """A real SIGKILL while the new version's files are being written: the previous version stays current
    and loads; the next change clears the half-written folder and succeeds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = copy_of(title_trained, tmp_path)
    add_items(path, items(1))
    marker = tmp_path / "writing"
    script = f"""
import time
from pathlib import Path
from generative_rec.catalogue import NewItem, add_items
from generative_rec.trie import Trie
save = Trie.save
def slow(self, p):
    save(self, p)
    Path({str(marker)!r}).touch()
    time.sleep(60)
Trie.save = slow
add_items({str(path)!r}, [NewItem("late", "Late Arrival (2031)")])
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, "the writer did not reach the trie"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((path / "catalogue").glob(".tmp-v000002-*"))  # the half-written version
    b = Bundle(path)
    assert b.catalogue_version == 1 and "late" not in b.item_ids
    assert add_items(path, [NewItem("late", "Late Arrival (2031)")]).version == 2
    assert not list((path / "catalogue").glob(".tmp-*")) and Bundle(path).item_ids[-1] == "late"


def test_concurrent_writers_take_turns(tiny_bundle, tmp_path):
    """Writers serialise on the bundle's lock: eight concurrent hides each get their own version and none is
    lost (each reads the version the previous one wrote)."""
    import concurrent.futures as cf

    path = copy_of(tiny_bundle, tmp_path)
    ids = Bundle(path).item_ids[:8]
    with cf.ThreadPoolExecutor(8) as ex:
        versions = sorted(c.version for c in ex.map(lambda i: hide_items(path, [i]), ids))
    assert versions == list(range(1, 9))
    assert Bundle(path).hidden == frozenset(range(8))
