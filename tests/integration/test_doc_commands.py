"""Every command shown in README.md and docs/*.md runs, on the tiny model and tiny data, so the docs cannot
drift from the code (as LitGPT tests every config it ships).

**Collected.** Every line of a fenced code block (except ``yaml``, ``json``, ``python`` ones) that starts with
``genrec`` or ``accelerate launch``; ``\\`` continuations are joined, ``# comments`` dropped, an optional flag
shown as ``[--resume]`` is taken as given. One test per command, its id ``<doc>:<line>``. Out of scope:
``make ...``, ``bash scripts/setup.sh``, ``python bench/...``, ``curl`` lines, and commands quoted in prose.

**Executed** (exit status 0 and the command's output written, else the test fails):

- in-process, through ``generative_rec.cli.main(argv)`` (what the ``genrec`` script calls): ``prepare``,
  ``index``, ``train``, ``eval``, ``demo``, ``benchmark``;
- as a subprocess: ``accelerate launch ... train/finetune.py ...`` (one CPU process), and ``genrec generate``
  (a real vLLM engine, about a minute to start on 2 cores, so these ids are also marked ``vllm``). Commands
  that the rewrite makes identical (README's and docs/serving.md's ``generate``) run once; each id reports it.

**Only parsed**, with the CLI's own parser (:data:`PARSE_ONLY`), which still fails on an unknown flag or value:
``genrec serve`` starts a vLLM HTTP server and blocks until killed (tests/vllm/test_server.py starts the real
one); ``genrec catalogue ...`` and ``genrec index --add-items`` need a title- or semantic-ID bundle
(tests/unit/test_catalogue.py runs them on one); ``genrec generate --engine ray`` joins a Ray cluster (``--ray-address``) or starts one vLLM engine per
actor, minutes on 2 cores (tests/vllm/test_generate_ray.py runs it on 2 local CPU actors).

**The rewrite.** Each command runs in a fresh temporary folder, where:

- ``train/`` links to the repository's (configs, accelerate configs, finetune.py); every ``data/<name>`` the
  command names, and ``data/ml-100k`` (the shipped configs' path), links to a tiny prepared data set
  (tests/helpers.py ``prepare_synthetic``: 30 users, 40 items, genres) — except for ``genrec prepare``, which
  writes its data; every ``--bundle runs/<name>`` is a copy of one tiny bundle trained once per module (tiny
  random Llama, atomic IDs, ``next_item`` + ``explain``); a ``--config X.yaml`` that is not in the repository is
  the doc's own ``yaml`` block introduced by ```X.yaml```, and the tables it reads are written from the tiny
  data; ``--input X.jsonl`` holds six of the tiny data's users;
- model and budget: ``--set`` overrides are appended to ``train``, ``demo``, ``finetune.py`` and a
  ``benchmark`` that trains its LLM (:data:`TINY_SET`: ``model.base=tiny-random``, 2 steps, ...);
  ``--model smollm2-135m`` becomes the tiny bundle's tokenizer; ``--explain N`` / ``--users N`` are capped
  at 4 / 8; ``accelerate launch`` gets ``--cpu --num_processes 1 --num_machines 1 --mixed_precision no
  --dynamo_backend no`` (a ``--config_file`` is still read); the baselines of ``eval`` and ``benchmark`` train
  the first point of their grid for at most 2 epochs (:func:`cap_baselines`; their quality is tested in
  tests/unit/test_baselines.py — here only that the documented names and flags work).

It fails when a documented command has an unknown subcommand or flag, an unknown config key or value, a
missing config file, or crashes; a new kind of command fails until it is given a rule here.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import json
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import REPO, load_tiny, prepare_synthetic, write_synthetic

pytestmark = pytest.mark.integration

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_SHELL = {"yaml", "yml", "json", "python", "py", "toml"}
TINY_SET = ["model.base=tiny-random", "model.dtype=float32", "model.collaborative.epochs=1", "train.max_steps=2",
            "train.batch_size=4", "train.save_every=0", "train.eval_every=0", "train.eval_users=8", "eval.users=8"]
ACCELERATE_CPU = ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no"]
CAPS = {"--explain": 4, "--users": 8}
IN_PROCESS = {"prepare", "index", "train", "eval", "demo", "benchmark"}
SUBPROCESS = {"generate", "accelerate"}
PARSE_ONLY = {  # what a command contains -> why it is only parsed
    ("genrec", "serve"): "starts a vLLM HTTP server and blocks (tests/vllm/test_server.py starts the real one)",
    ("genrec", "generate", "--engine", "ray"): "joins a Ray cluster or starts one vLLM engine per actor "
                                                "(tests/vllm/test_generate_ray.py runs it on 2 local CPU actors)",
    ("genrec", "catalogue"): "changes a bundle with title or semantic IDs (the docs' tiny bundle has atomic IDs); "
                             "tests/unit/test_catalogue.py runs these commands on such bundles",
    ("genrec", "index", "--add-items"): "the same as `genrec catalogue add` (tests/unit/test_catalogue.py runs it)",
}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "OPENBLAS_NUM_THREADS": "1",
       "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
N_INPUT_USERS = 6


# --------------------------------------------------------------------------- collecting the commands
@dataclass(frozen=True)
class DocCommand:
    doc: str  # relative to the repository
    line: int  # 1-based, where the command starts
    text: str
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def kind(self) -> str:
        return self.argv[1] if self.argv[0] == "genrec" and len(self.argv) > 1 else self.argv[0]

    @property
    def mode(self) -> str:
        """parse | in-process | subprocess | unknown"""
        for words in PARSE_ONLY:
            if self.argv[:2] == words[:2] and all(w in self.argv for w in words[2:]):
                return "parse"
        return "in-process" if self.kind in IN_PROCESS else "subprocess" if self.kind in SUBPROCESS else "unknown"


def doc_commands(path: Path) -> list[DocCommand]:
    """The ``genrec`` / ``accelerate launch`` lines of ``path``'s fenced code blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, fence, i = [], None, 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("```"):
            fence = s[3:].strip().lower() if fence is None else None
            i += 1
            continue
        if fence is None or fence in NOT_SHELL or not s:
            i += 1
            continue
        start, text = i, s
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        text = text.removeprefix("$ ")
        argv = shlex.split(text, comments=True)
        if argv and (argv[0] == "genrec" or argv[:2] == ["accelerate", "launch"]):
            out.append(DocCommand(str(path.relative_to(REPO)), start + 1, text, tuple(argv)))
    return out


def doc_yaml_block(doc: Path, name: str) -> str | None:
    """The ``yaml`` block of ``doc`` whose introducing line (the last text line before it) names ```name```."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if line.strip() in ("```yaml", "```yml"):
            before = next((x for x in reversed(lines[:n]) if x.strip()), "")
            if f"`{name}`" in before:
                end = next(k for k in range(n + 1, len(lines)) if lines[k].strip().startswith("```"))
                return "\n".join(lines[n + 1: end]) + "\n"
    return None


COMMANDS = [c for doc in DOCS for c in doc_commands(doc)]


def _param(c: DocCommand):
    return pytest.param(c, id=c.id, marks=[pytest.mark.vllm] if c.kind == "generate" and c.mode != "parse" else [])


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def doc_data(tmp_path_factory) -> Path:
    """Tiny prepared data of this module's own (commands may run against it; nothing else shares it)."""
    return Path(prepare_synthetic(tmp_path_factory.mktemp("doc-data")))


@pytest.fixture(scope="module")
def doc_bundle(tmp_path_factory, doc_data) -> Path:
    """The tiny bundle every ``--bundle`` gets: trained with ``explain`` (``genrec eval --explain``), head_dim 32
    (vLLM's CPU attention has no kernel for 16)."""
    from generative_rec.training import train

    cfg = load_tiny(doc_data, tmp_path_factory.mktemp("doc-bundle") / "bundle",
                    model={"tiny": {"hidden": 64, "layers": 2, "heads": 2, "vocab": 400}},
                    prompts={"tasks": {"next_item": 1.0, "explain": 0.3}}, train={"max_steps": 4})
    return Path(train(cfg))


@pytest.fixture(scope="module")
def genrec_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("genrec-home")


RAN_ONCE: dict[tuple[str, ...], tuple[str, int, str]] = {}  # rewritten argv -> (first id, exit status, output)


def cap_baselines(monkeypatch, epochs: int = 2) -> None:
    """Baselines train the first point of their grid for at most ``epochs`` epochs (this process only)."""
    import generative_rec.evaluation.baselines as pkg
    from generative_rec.evaluation.baselines import common, tuning

    real = common.early_stopping
    sig = inspect.signature(real)

    def capped(*args, **kwargs):
        b = sig.bind(*args, **kwargs)
        b.arguments["max_epochs"] = min(b.arguments["max_epochs"], epochs)
        return real(*b.args, **b.kwargs)

    for m in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{m.name}")
        if getattr(mod, "early_stopping", None) is real:
            monkeypatch.setattr(mod, "early_stopping", capped)
    points = tuning.grid_points
    monkeypatch.setattr(tuning, "grid_points", lambda grid: points(grid)[:1])


# --------------------------------------------------------------------------- the rewrite
def _values(argv, flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def write_table_inputs(cfg: dict, ws: Path) -> None:
    """The interaction and item tables a ``source: table`` prepare config reads, from the tiny synthetic data,
    with the column names the config maps."""
    t = cfg["table"]
    inter, items = write_synthetic(ws / "synthetic-raw")
    rows = [json.loads(x) for x in inter.read_text().splitlines()]
    write_rows(ws / t["path"], [t.get("user", "user_id"), t.get("item", "item_id"), t.get("timestamp", "timestamp")],
               [[r["user"], r["item"], r["ts"]] for r in rows])
    if t.get("items_path"):
        with open(items, encoding="utf-8") as f:
            it = list(csv.DictReader(f))
        fields = t.get("item_fields") or []
        write_rows(ws / t["items_path"], [t.get("item_id", "item_id"), t.get("title", "title"), *fields],
                   [[r["item_id"], r["title"], *[r["genres"]] * len(fields)] for r in it])


def write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writerow(header)
            w.writerows(rows)
    elif path.suffix in (".jsonl", ".json"):
        path.write_text("".join(json.dumps(dict(zip(header, r, strict=True))) + "\n" for r in rows))
    else:
        pytest.fail(f"no fixture writer for a {path.suffix} table ({path.name}); add one to write_rows")


def rewrite(cmd: DocCommand, ws: Path, data: Path, bundle: Path) -> list[str]:
    """The documented command, made to run on the tiny model and data in ``ws`` (see the module doc)."""
    argv = [a[1:-1] if re.fullmatch(r"\[--?[\w-]+\]", a) else a for a in cmd.argv]
    for i, a in enumerate(argv[:-1]):
        if a in CAPS and argv[i + 1].isdigit():
            argv[i + 1] = str(min(int(argv[i + 1]), CAPS[a]))
    argv = [str(bundle / "model") if a == "smollm2-135m" else a for a in argv]
    if cmd.mode == "parse":
        return argv
    for a in (*_values(argv, "--bundle"), *_values(argv, "--config"), *_values(argv, "--input")):
        assert not Path(a).is_absolute(), f"{cmd.id}: {a} is outside the working folder; run it parse-only"
    (ws / "train").symlink_to(REPO / "train", target_is_directory=True)
    if cmd.kind != "prepare":
        names = {"data/ml-100k"} | {m for a in argv for m in re.findall(r"(?:^|=)(data/[\w.-]+)$", a)}
        for name in sorted(names):
            (ws / name).parent.mkdir(parents=True, exist_ok=True)
            (ws / name).symlink_to(data, target_is_directory=True)
    for b in _values(argv, "--bundle"):
        shutil.copytree(bundle, ws / b)
    for c in _values(argv, "--config"):
        if not (ws / c).exists():
            text = doc_yaml_block(REPO / cmd.doc, Path(c).name)
            assert text is not None, f"{cmd.id}: --config {c} is neither in the repository nor a yaml block of {cmd.doc}"
            (ws / c).write_text(text)
            cfg = yaml.safe_load(text)
            if cfg.get("source") == "table":
                write_table_inputs(cfg, ws)
    for inp in _values(argv, "--input"):
        from generative_rec.data import RecData

        d = RecData(data)
        (ws / inp).write_text("".join(
            json.dumps({"user_id": d.user_ids[u], "history": [d.item_ids[i] for i in d.history(u, "test")]}) + "\n"
            for u in range(N_INPUT_USERS)))
    trains_llm = cmd.kind in ("train", "demo") or (cmd.kind == "benchmark" and "--bundle" not in argv) or (
        cmd.kind == "accelerate")
    if cmd.kind == "accelerate":
        argv = [str(Path(sys.executable).parent / "accelerate"), "launch", *ACCELERATE_CPU, *argv[2:]]
    if trains_llm:
        argv += [x for s in TINY_SET for x in ("--set", s)]
    return argv


# --------------------------------------------------------------------------- running
def run_in_process(argv: list[str], capsys) -> str:
    from generative_rec.cli import main

    try:
        main(argv[1:])
    except SystemExit as e:
        if e.code not in (0, None):
            out = capsys.readouterr()
            pytest.fail(f"{shlex.join(argv)} exited with {e.code}:\n{out.out[-3000:]}\n{out.err[-3000:]}")
    out = capsys.readouterr()
    return out.out + out.err


def run_subprocess(cmd: DocCommand, argv: list[str], ws: Path, genrec_home: Path) -> str:
    key = tuple(argv)
    if key not in RAN_ONCE:
        if argv[0] == "genrec":
            argv = [sys.executable, "-m", "generative_rec", *argv[1:]]
        p = subprocess.run(argv, cwd=ws, env={**ENV, "GENREC_HOME": str(genrec_home)}, capture_output=True,
                           text=True, timeout=600)
        RAN_ONCE[key] = (cmd.id, p.returncode, p.stdout[-3000:] + "\n" + p.stderr[-3000:])
    first, rc, out = RAN_ONCE[key]
    assert rc == 0, f"{shlex.join(key)} (run for {first}) exited with {rc}:\n{out}"
    return out


def check_outputs(cmd: DocCommand, argv: list[str], ws: Path, out: str) -> None:
    """What the command must have written (a bundle, a report, a prepared folder, ...) or printed."""
    from generative_rec.cli import build_parser
    from generative_rec.config import load_config

    if cmd.kind == "accelerate":
        script = next(i for i, a in enumerate(argv) if a.endswith("finetune.py"))
        bundle = load_config(ws / _values(argv, "--config")[0], _values(argv[script:], "--set")).output
        assert (ws / bundle / "bundle.json").exists(), f"no bundle at {bundle}"
        return
    a = build_parser().parse_args(argv[1:])
    if cmd.kind == "prepare":
        prepared = yaml.safe_load((ws / a.config).read_text())["output"] if a.config else a.output
        assert (ws / prepared / "meta.json").exists(), f"nothing prepared at {prepared}"
        if a.new_items:
            meta = yaml.safe_load((ws / prepared / "meta.json").read_text())
            assert meta["cold_start"]["new_item_fraction"] == a.new_items, meta.get("cold_start")
    elif cmd.kind in ("train", "demo"):
        bundle = load_config(ws / a.config if a.config else REPO / "train/configs/demo_cpu.yaml", a.set).output
        assert (ws / bundle / "bundle.json").exists(), f"no bundle at {bundle}"
    elif cmd.kind == "eval":
        report = Path(a.output) if a.output else Path(a.bundle) / f"eval-{a.split}"
        assert (ws / report / "results.json").exists(), f"no report at {report}"
    elif cmd.kind == "benchmark":
        report = Path(a.output or f"runs/benchmark-{a.tier}")
        assert (ws / report / "results.json").exists(), f"no report at {report}"
    elif cmd.kind == "index":
        assert "items" in out and (not a.model or "trie: " in out), out[-2000:]  # --model: the trie's stats
        assert not a.output or (ws / a.output / "index.json").exists()
    elif cmd.kind == "generate":
        lines = (ws / a.output).read_text().splitlines() if (ws / a.output).exists() else []
        assert len(lines) == N_INPUT_USERS and all("items" in json.loads(x) for x in lines)


def test_the_docs_show_every_stage():
    """The collector finds the commands (an empty list would make the parametrized test vacuous)."""
    kinds = {c.kind for c in COMMANDS}
    assert {"prepare", "index", "train", "eval", "benchmark", "serve", "generate", "accelerate"} <= kinds, kinds
    assert [c.id for c in COMMANDS if c.mode == "unknown"] == []


@pytest.mark.parametrize("cmd", [_param(c) for c in COMMANDS])
def test_documented_command_runs(cmd: DocCommand, tmp_path, monkeypatch, capsys, doc_data, doc_bundle, genrec_home):
    ws = tmp_path / "ws"
    ws.mkdir()
    argv = rewrite(cmd, ws, doc_data, doc_bundle)
    if cmd.mode == "parse":
        from generative_rec.cli import build_parser

        try:
            a = build_parser().parse_args(argv[1:])
        except SystemExit as e:
            pytest.fail(f"{cmd.id}: `{cmd.text}` does not parse ({e.code}): {capsys.readouterr().err[-2000:]}")
        assert a.fn is not None
        return
    monkeypatch.chdir(ws)
    monkeypatch.setenv("GENREC_HOME", str(genrec_home))
    if cmd.mode == "in-process":
        cap_baselines(monkeypatch)
        out = run_in_process(argv, capsys)
    elif cmd.mode == "subprocess":
        out = run_subprocess(cmd, argv, ws, genrec_home)
        if tuple(argv) in RAN_ONCE and RAN_ONCE[tuple(argv)][0] != cmd.id:
            return  # the same command ran for an earlier id (its outputs are in that id's folder)
    else:
        pytest.fail(f"{cmd.id}: no rule to run `{cmd.kind}`; add it to IN_PROCESS, SUBPROCESS or PARSE_ONLY here")
    check_outputs(cmd, argv, ws, out)
