"""What a recommendation request means (``serving.request``), and what the server process imports.

``prepare`` and ``items_of`` are shared by ``POST /v1/recommendations`` and ``genrec generate``; these tests
run them on the tiny trained bundle, without vLLM. The import checks keep the server light and the package
graph one-directional (issue: explanations formed the project's only import cycle).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generative_rec.bundle import Bundle
from generative_rec.decoding.beam import Ranked
from generative_rec.serving.request import MAX_HISTORY_ITEMS, RequestError, items_of, prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tiny_bundle) -> Bundle:
    return Bundle(tiny_bundle)


def _error(fn, *args, **kw) -> RequestError:
    with pytest.raises(RequestError) as e:
        fn(*args, **kw)
    return e.value


def test_prepare_resolves_ids_and_titles_and_excludes_the_history(bundle):
    ids = bundle.item_ids[:3]
    by_title = [bundle.item_ids[0], bundle.titles[1], bundle.item_ids[2]]
    a = prepare(bundle, ids, k=5)
    b = prepare(bundle, by_title, k=5)
    assert a.history == b.history == [0, 1, 2]
    assert a.prompt == b.prompt == bundle.prompt_ids([0, 1, 2])
    assert a.exclude == [0, 1, 2] and a.k == 5 and a.used == 3
    kept = prepare(bundle, ids, k=5, exclude_history=False, exclude_keys=[bundle.item_ids[7]])
    assert kept.exclude == [7]


def test_prepare_shows_only_the_most_recent_max_history_items(bundle):
    max_h = bundle.manifest["max_history"]
    n = max_h + 4
    keys = [bundle.item_ids[i % bundle.num_items] for i in range(n)]
    p = prepare(bundle, keys, k=3)
    rows = [i % bundle.num_items for i in range(n)]
    assert p.used == max_h and p.history == rows
    assert p.prompt == bundle.prompt_ids(rows[-max_h:])
    assert p.exclude == sorted(set(rows))  # the whole history is excluded, not only the shown part


@pytest.mark.parametrize(
    ("keys", "kw", "param", "words"),
    [
        ([], {"k": 3}, "history", "history is empty"),
        (["0"] * (MAX_HISTORY_ITEMS + 1), {"k": 3}, "history", f"at most {MAX_HISTORY_ITEMS}"),
        (None, {"k": 0}, "k", "at least 1"),
        (None, {"k": 10**6}, "k", "larger than the catalogue"),
        (None, {"k": 6, "max_k": 5}, "k", "max_k=5"),
        (["no-such-item", "nor-this"], {"k": 3}, "history", "no-such-item"),
        (None, {"k": 3, "exclude_keys": ["missing-x"]}, "exclude", "missing-x"),
    ],
)
def test_prepare_refuses_what_cannot_be_served(bundle, keys, kw, param, words):
    keys = bundle.item_ids[:2] if keys is None else keys
    e = _error(prepare, bundle, keys, **kw)
    assert e.param == param and words in str(e)


def test_prepare_refuses_k_above_what_the_exclusions_leave(bundle):
    n = bundle.num_items
    e = _error(prepare, bundle, bundle.item_ids[: n - 2], k=3)
    assert e.param == "k" and "only 2 catalogue items remain" in str(e)
    assert prepare(bundle, bundle.item_ids[: n - 2], k=2).k == 2


def test_items_of_keeps_the_ranking_order_and_scores(bundle):
    r = Ranked(items=np.array([4, 1, 9]), scores=np.array([-0.5, -1.25, -3.0]))
    out = items_of(bundle, r)
    assert [o["item_id"] for o in out] == [bundle.item_ids[i] for i in (4, 1, 9)]
    assert [o["title"] for o in out] == [bundle.titles[i] for i in (4, 1, 9)]
    assert [o["score"] for o in out] == [-0.5, -1.25, -3.0]


# --------------------------------------------------------------------------- what the server imports
SERVER_MUST_NOT_LOAD = ("generative_rec.data", "generative_rec.tasks", "generative_rec.evaluation",
                        "generative_rec.training", "generative_rec.benchmark", "generative_rec.explain.evaluate",
                        "generative_rec.explain.hf", "generative_rec.explain.metrics", "generative_rec.explain.targets")


def test_the_server_process_imports_no_readers_tasks_or_evaluation(tiny_bundle):
    """Import the server modules, load a bundle and prepare a request, as ``genrec serve`` does."""
    code = f"""
import json, sys
import generative_rec.serving.launch, generative_rec.serving.app, generative_rec.serving.cli
from generative_rec.bundle import Bundle
from generative_rec.explain.vllm import make_explainer
from generative_rec.serving.request import prepare
b = Bundle({str(tiny_bundle)!r})
prepare(b, b.item_ids[:3], k=3)
b.trie
make_explainer(b, engine=None)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("generative_rec"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "generative_rec.serving.request" in loaded and "generative_rec.explain.contract" in loaded
    bad = [m for m in loaded if m.startswith(SERVER_MUST_NOT_LOAD)]
    assert not bad, f"the server process imports {bad}"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (top level and inside functions)."""
    pkg = ROOT / "generative_rec"
    mods: dict[str, Path] = {}
    for f in pkg.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        out: set[str] = set()
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(n, ast.Import):
                out |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and not n.level and n.module:
                out |= {f"{n.module}.{a.name}" if f"{n.module}.{a.name}" in mods else n.module for a in n.names}
        graph[name] = {d for d in out if d in mods and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "generative_rec.explain.contract" in graph and graph["generative_rec.serving.app"]
    assert _cycles(graph) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
