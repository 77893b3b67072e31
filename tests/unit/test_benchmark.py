"""`genrec benchmark` on the tiny synthetic data with the tiny-random LLM bundle: the files it writes, the
table, the plots, per-user results for paired tests, and `--resume` skipping finished models."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import yaml
from helpers import REPO, tiny_config

from generative_rec import benchmark
from generative_rec.cli import main as genrec
from generative_rec.errors import GenRecError
from generative_rec.evaluation.metrics import TABLE_METRICS

MODELS = ["pop", "itemknn", "content_knn", "llm"]


@pytest.fixture(autouse=True)
def cache_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GENREC_HOME", str(tmp_path_factory.getbasetemp() / "genrec-home"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_data, tiny_bundle):
    """One benchmark run through the real CLI parser: (output folder, results.json)."""
    out = tmp_path_factory.mktemp("bench") / "out"
    genrec(["benchmark", "--data", str(tiny_data), "--bundle", str(tiny_bundle), "--models", ",".join(MODELS),
            "--output", str(out), "--seed", "0"])
    return out, json.loads((out / "results.json").read_text())


def test_writes_every_file(finished):
    out, _ = finished
    for f in ("results.json", "results.md", "per_user.npz", "metric_vs_k.png", "accuracy_vs_popularity.png"):
        assert (out / f).stat().st_size > 0, f
    for m in MODELS:
        assert (out / "models" / f"{m}.json").exists() and (out / "models" / f"{m}.npz").exists()
    for png in ("metric_vs_k.png", "accuracy_vs_popularity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_records_the_setup_and_every_model(finished):
    _, rep = finished
    assert list(rep["models"]) == MODELS
    s = rep["setup"]
    assert s["split"] == "test" and s["mask_history"] and s["users"] == s["num_users"] == 30
    assert s["ks"] == [1, 5, 10, 20] and s["tier"] == "cpu"
    assert rep["command"].startswith("genrec benchmark --data ") and "--bundle" in rep["command"]
    for key in ("machine", "commit", "wall_s", "command", "seed", "tier_settings"):
        assert rep[key] is not None, key
    for r in rep["models"].values():
        assert r["setup"] == s
        m = r["metrics"]
        # a hit at rank 1 scores 1 in every metric; NDCG discounts later hits, so the order is fixed
        assert m["HR@1"] <= m["MRR@10"] <= m["NDCG@10"] <= m["HR@10"] <= m["HR@20"]
        assert rep["seconds_per_model"][r["model"]] == pytest.approx(r["seconds"], abs=0.051)
    assert rep["models"]["itemknn"]["trials"] and "k" in rep["models"]["itemknn"]["params"]
    assert rep["models"]["content_knn"]["item_embeddings"]["shape"][0] == 40
    llm = rep["models"]["llm"]
    assert llm["metrics"]["Validity"] == 1.0 and llm["params"]["base_model"] == "tiny-random"


def test_per_user_results_and_the_paired_test(finished):
    out, rep = finished
    z = np.load(out / "per_user.npz")
    assert len(z["users"]) == 30
    for m in MODELS:
        v = z[f"{m}/NDCG@10"]
        assert v.shape == (30,)
        assert v.mean() == pytest.approx(rep["models"][m]["metrics"]["NDCG@10"])
    c = rep["comparison"]
    baselines = [m for m in MODELS if m != "llm"]
    assert c["best_baseline"] == max(baselines, key=lambda m: rep["models"][m]["metrics"]["NDCG@10"])
    if c["best_baseline_NDCG@10"] > 0:
        assert c["ratio"] == pytest.approx(c["llm_NDCG@10"] / c["best_baseline_NDCG@10"])
    p = c["paired"]
    diff = z["llm/NDCG@10"] - z[f"{c['best_baseline']}/NDCG@10"]
    assert p["n"] == 30 and p["mean_diff"] == pytest.approx(diff.mean())
    from scipy import stats

    assert p["t_pvalue"] == pytest.approx(stats.ttest_rel(z["llm/NDCG@10"], z[f"{c['best_baseline']}/NDCG@10"]).pvalue,
                                          nan_ok=True)


def test_markdown_table(finished):
    out, rep = finished
    md = (out / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    cols = [c.strip(" |") for c in header.split(" | ")[1:]]
    assert cols == [m for m in TABLE_METRICS if m not in ("Invalid (no trie)", "Duplicate (no trie)")] + [
        "Invalid (no trie)", "Duplicate (no trie)"]
    for m in MODELS:
        assert f"\n| {m} |" in md
    llm_row = next(line for line in md.splitlines() if line.startswith("| llm |"))
    cells = [c.strip() for c in llm_row.strip("|").split("|")][1:]
    assert cells[cols.index("Validity")] == "1.0000"  # parsed back from the generated ID text
    assert f"LLM vs the best baseline ({rep['comparison']['best_baseline']})" in md
    assert "](metric_vs_k.png)" in md and "](accuracy_vs_popularity.png)" in md
    assert "Machine:" in md and rep["commit"] in md


def test_resume_skips_finished_models(finished, tiny_data, tiny_bundle, tmp_path, monkeypatch):
    out, rep = finished
    copy = tmp_path / "out"
    import shutil

    shutil.copytree(out, copy)
    (copy / "models" / "itemknn.json").unlink()  # as if the run had been killed while tuning item-kNN
    ran = []
    real = benchmark.run_baseline

    def counting(name, *a, **kw):
        ran.append(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(benchmark.runner, "run_baseline", counting)
    monkeypatch.setattr(benchmark.runner, "run_llm", lambda *a, **kw: pytest.fail("the LLM result was kept"))
    rep2 = benchmark.run_benchmark(tiny_data, models=MODELS, bundle=tiny_bundle, output=copy, resume=True,
                                   progress=False)
    assert ran == ["itemknn"]
    assert rep2["resumed"] == ["pop", "content_knn", "llm"]
    for m in MODELS:
        assert rep2["models"][m]["metrics"] == pytest.approx(rep["models"][m]["metrics"], nan_ok=True)


def test_resume_refuses_results_of_another_setup(finished, tiny_data, tiny_bundle, tmp_path):
    import shutil

    shutil.copytree(finished[0], tmp_path / "out")
    with pytest.raises(GenRecError, match="another set-up"):
        benchmark.run_benchmark(tiny_data, models=["pop"], bundle=tiny_bundle, users=10, output=tmp_path / "out",
                                resume=True, progress=False)


def test_llm_config_trains_once_then_resume_reuses_the_bundle(tiny_data, tmp_path, monkeypatch):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "ignored", train={"max_steps": 2})))
    out = tmp_path / "out"
    rep = benchmark.run_benchmark(tiny_data, models=["pop", "llm"], llm_config=cfg, users=12, output=out,
                                  progress=False)
    assert (out / "llm-bundle" / "bundle.json").exists() and not (tmp_path / "ignored").exists()
    assert rep["models"]["llm"]["params"]["steps"] == 2 and rep["setup"]["users"] == 12
    (out / "models" / "llm.json").unlink()
    import generative_rec.training

    monkeypatch.setattr(generative_rec.training, "train", lambda *a, **kw: pytest.fail("trained again"))
    rep2 = benchmark.run_benchmark(tiny_data, models=["pop", "llm"], llm_config=cfg, users=12, output=out,
                                   resume=True, progress=False)
    assert rep2["models"]["llm"]["metrics"] == pytest.approx(rep["models"]["llm"]["metrics"], nan_ok=True)


def test_unknown_model_is_a_clear_error(tiny_data, tiny_bundle, tmp_path):
    with pytest.raises(GenRecError, match="unknown model 'nope'"):
        benchmark.run_benchmark(tiny_data, models=["nope"], bundle=tiny_bundle, output=tmp_path, progress=False)


def test_quality_wrapper_publishes_with_rewritten_links(finished, tmp_path):
    spec = importlib.util.spec_from_file_location("quality", REPO / "bench" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    written = quality.publish(finished[0], "cpu", dest=tmp_path)
    assert sorted(p.name for p in written) == sorted(
        ["quality-cpu.md", "quality-cpu.json", "quality-cpu-metric_vs_k.png",
         "quality-cpu-accuracy_vs_popularity.png"])
    md = (tmp_path / "quality-cpu.md").read_text()
    assert "](quality-cpu-metric_vs_k.png)" in md and "](metric_vs_k.png)" not in md


def test_every_shipped_run_config_loads():
    """The strict loader rejects a typo: each config in train/configs is a valid RunConfig as shipped."""
    from generative_rec.config import load_config

    configs = sorted((REPO / "train" / "configs").glob("*.yaml"))
    assert {p.name for p in configs} >= {"demo_cpu.yaml", "cpu_tier.yaml", "full_gpu.yaml"}
    for p in configs:
        cfg = load_config(p)
        assert cfg.model.base == "smollm2-135m" and cfg.index.scheme == "atomic", p.name
    long = benchmark.TIERS["cpu-long"]
    assert load_config(REPO / long.llm_config, long.llm_set).train.max_steps == 4 * load_config(
        REPO / benchmark.TIERS["cpu"].llm_config).train.max_steps


def test_tiers_name_real_configs_and_models():
    from generative_rec.config import load_config
    from generative_rec.evaluation.baselines import BASELINES

    for tier in benchmark.TIERS.values():
        cfg = load_config(REPO / tier.llm_config, tier.llm_set)
        assert cfg.model.collaborative.source == "sasrec" or tier.name == "full"
        for name, grid in tier.grids.items():
            fields = BASELINES[name].__dataclass_fields__
            assert set(grid) | set(tier.fixed.get(name, {})) <= set(fields), name
