"""The real CLI end to end on small real data: prepare -> train -> eval, plus the accelerate entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import AMAZON, REPO, tiny_config, write_amazon_sample

pytestmark = pytest.mark.integration

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(*args: str, cwd: Path = REPO, timeout: int = 900) -> str:
    p = subprocess.run(list(args), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def genrec(*args: str, **kw) -> str:
    return run(sys.executable, "-m", "generative_rec", *args, **kw)


def prepare_amazon(reviews: Path, folder: Path) -> tuple[Path, str]:
    out = folder / "prepared"
    cfg = folder / "prep.yaml"
    cfg.write_text(yaml.safe_dump({"source": "amazon", "amazon": {"path": str(reviews)}, "output": str(out)}))
    return out, genrec("prepare", "--config", str(cfg))


@pytest.fixture(scope="module")
def amazon(tmp_path_factory) -> Path:
    """The Amazon-layout sample (tests/helpers.py) prepared by the real CLI."""
    folder = tmp_path_factory.mktemp("amazon")
    out, text = prepare_amazon(write_amazon_sample(folder / "reviews.json.gz"), folder)
    assert "120 users, 40 items, 811 interactions" in text
    return out


@pytest.mark.shared_data
def test_prepare_the_full_shared_amazon_file(tmp_path):
    assert AMAZON.exists(), f"the shared Amazon review data is missing at {AMAZON} (set GENREC_SHARED_DATA)"
    out, text = prepare_amazon(AMAZON, tmp_path)
    assert "1429 users, 900 items, 10261 interactions" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_users"] == 1429 and meta["user_text_fields"] == ["review", "summary"]


def test_prepare_writes_a_complete_dataset(amazon):
    assert sorted(p.name for p in amazon.iterdir()) == ["items", "meta.json", "users"]
    meta = json.loads((amazon / "meta.json").read_text())
    assert meta["num_users"] == 120 and meta["user_text_fields"] == ["review", "summary"]


def test_prepare_bad_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"u": "a", "i": "x", "t": 1}\n{"u": "a", "i": "y", "t": "soon"}\n')
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"source": "table", "output": str(tmp_path / "out"),
                                   "table": {"path": str(bad), "user": "u", "item": "i", "timestamp": "t"}}))
    p = subprocess.run([sys.executable, "-m", "generative_rec", "prepare", "--config", str(cfg)], env=ENV,
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert f"{bad}:2: timestamp 'soon' is not a number" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()


def test_train_then_eval_on_real_data(amazon, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(amazon, tmp_path / "bundle", index={"scheme": "sequential"},
                                              train={"max_steps": 4, "save_every": 2})))
    out = genrec("train", "--config", str(cfg))
    assert "bundle written to" in out
    bundle = tmp_path / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["adapter", "bundle.json", "catalogue.jsonl", "config.yaml", "index.json", "logs", "metrics.json", "model",
         "templates.json", "trie.npz"])
    # report_to: auto logs through accelerate's tracker API (TensorBoard is a dev dependency)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(bundle / "logs" / "train"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4]
    assert "valid/NDCG@10" in acc.Tags()["scalars"]
    out = genrec("eval", "--bundle", str(bundle), "--users", "25", "--baselines", "pop")
    assert "| pop |" in out and "LLM (tiny-random, sequential IDs)" in out
    rep = json.loads((bundle / "eval-test" / "results.json").read_text())
    llm = next(v for k, v in rep["results"].items() if k.startswith("LLM"))
    assert rep["users"] == 25 and llm["Validity"] == 1.0 and llm["Distinct"] == 1.0
    for ex in rep["examples"]:
        assert len(ex["top10"]) == 10 and len({t[0] for t in ex["top10"]}) == 10


def test_accelerate_launch_runs_the_same_training(tiny_data, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "b", train={"max_steps": 3})))
    accelerate = Path(sys.executable).parent / "accelerate"
    out = run(str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "train/finetune.py", "--config", str(cfg))
    assert "bundle written to" in out
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["train"]["steps"] == 3


def test_two_processes_train_in_sync(tiny_data, tmp_path):
    """torchrun with 2 gloo processes on one CPU machine: same script, data sharded, one bundle."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "b", train={"max_steps": 3, "batch_size": 2})))
    torchrun = Path(sys.executable).parent / "torchrun"
    out = run(str(torchrun), "--nproc_per_node", "2", "train/finetune.py", "--config", str(cfg))
    assert "2 process(es)" in out and "bundle written to" in out
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())["train"]
    assert m["processes"] == 2 and m["steps"] == 3 and m["replicas_in_sync"] is True
    assert "replicas in sync: True" in out


def test_resume_without_checkpoint_and_overwrite_guard(tiny_data, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "b", train={"max_steps": 2})))
    genrec("train", "--config", str(cfg))
    p = subprocess.run([sys.executable, "-m", "generative_rec", "train", "--config", str(cfg)], env=ENV,
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "already holds a bundle" in p.stderr


def test_demo_trains_evaluates_and_prints_the_readme_report(amazon, tmp_path):
    """`genrec demo --config`: the README's main command on a tiny config (every test user, Pop beside)."""
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(amazon, tmp_path / "bundle", train={"max_steps": 2},
                                              eval={"users": None, "ks": [1, 5, 10, 20], "baselines": ["pop"]})))
    out = genrec("demo", "--config", str(cfg))
    assert "Held-out next item:" in out and "Top-10 (trie-constrained beam search" in out
    assert "== test split, 120 users (every user), full ranking over all items, history masked" in out
    assert "| LLM (tiny-random, atomic IDs) |" in out and "| pop |" in out and "LLM vs pop (per-user NDCG@10)" in out
    rep = json.loads((tmp_path / "bundle" / "eval-test" / "results.json").read_text())
    assert rep["users"] == 120
