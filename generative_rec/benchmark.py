"""``genrec benchmark``: every model on the same users of the same split -> results.json, a table, plots.

Protocol (the one ``genrec eval`` and ``bench/baselines_ml100k.py`` use): leave-one-out, the test split,
full ranking over ALL items, each user's history masked. Every baseline trains on the training part of
the sequences only and is tuned on validation NDCG@10 (early stopping on it too); the configuration with
the best validation score is evaluated once on the test users. The LLM is a bundle (``--bundle``) or is
trained first from a run config (``--llm-config``) and decoded with the trie over the same users.

Three tiers, which differ only in grids and budgets (:data:`TIERS`):

- ``cpu``: fits in 30 minutes on 2 idle cores, LLM included: ``train/configs/cpu_tier.yaml`` (atomic IDs
  with a collaborative start from SASRec, every window, ~one pass in 300 LoRA steps), one or two
  configurations per iterative baseline with an epoch cap (the configurations are the best of the full
  grids on ML-100K validation), the full grids for the cheap models (item-kNN, content-kNN).
- ``cpu-long``: <= 2 hours on 2 cores: the same baselines, the same LLM config trained 4x longer.
- ``full``: for a GPU machine: the LLM trained on all training windows for several epochs
  (``train/configs/full_gpu.yaml``), every baseline's full grid without epoch caps.

Written to ``--output`` (default ``runs/benchmark-<tier>``): ``results.json`` (metrics, tuned parameters,
seeds, seconds, split, machine, commit, wall time), ``results.md``, ``per_user.npz`` (per-user accuracy of
every model, same user order: paired tests), ``metric_vs_k.png``, ``accuracy_vs_popularity.png``, and
``models/<name>.json|.npz``: each model's result, written atomically as soon as it is done, so
``--resume`` after a kill redoes only the models that had not finished.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from generative_rec.errors import ConfigError, GenRecError
from generative_rec.io import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("pop", "itemknn", "bpr", "sasrec", "lightgcn", "content_knn", "mf_llm_init", "llm")
CONTENT_MODELS = ("content_knn", "mf_llm_init")  # need item embeddings from the LLM's base model
KS = (1, 5, 10, 20)
TARGET_RATIO = 1.3  # the issue's bar: LLM NDCG@10 >= 1.3 x the best classic baseline (full tier, GPU)


@dataclass(frozen=True)
class Tier:
    """Grids and budgets of one benchmark tier. A model missing from ``grids`` uses its own ``grid``."""

    name: str
    llm_config: str  # relative to the repository root
    grids: dict[str, dict[str, list]] = field(default_factory=dict)
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. epoch caps
    llm_batch_size: int = 16
    budget: str = ""
    llm_set: list[str] = field(default_factory=list)  # overrides of llm_config (before the user's --llm-set)


# On ML-100K the full grids chose bpr/mf dim=128 reg=1e-4 (best epoch 30), lightgcn layers=2 reg=1e-4 (best
# epoch 70), sasrec dropout=0.2 (best epoch 48): the CPU tiers keep those regions.
CPU_GRIDS = {"bpr": {"dim": [128], "reg": [1e-4, 1e-3]}, "lightgcn": {"layers": [2], "reg": [1e-4]},
             "sasrec": {"dropout": [0.2]}, "mf_llm_init": {"dim": [128], "reg": [1e-4]}}
CPU_FIXED = {"bpr": {"epochs": 100}, "lightgcn": {"epochs": 80}, "sasrec": {"epochs": 45},
             "mf_llm_init": {"epochs": 100}}

TIERS = {
    "cpu": Tier(
        "cpu", "train/configs/cpu_tier.yaml",
        grids=CPU_GRIDS, fixed=CPU_FIXED,
        llm_batch_size=16,
        budget="<= 30 min on 2 idle CPU cores including LLM training (cpu_tier.yaml) and decoding",
    ),
    "cpu-long": Tier(
        "cpu-long", "train/configs/cpu_tier.yaml", llm_set=["train.max_steps=1200", "train.save_every=100"],
        grids=CPU_GRIDS, fixed=CPU_FIXED,
        llm_batch_size=16,
        budget="<= 2 h on 2 idle CPU cores: the CPU tier's baselines, the LLM trained 4x longer (~4 passes)",
    ),
    "full": Tier("full", "train/configs/full_gpu.yaml", llm_batch_size=64,
                 budget="a GPU for the LLM (trained to convergence on all training windows); full grids, "
                        "no epoch caps"),
}


# --------------------------------------------------------------------------- set-up
def ensure_prepared(path: str | Path) -> Path:
    """The prepared data folder; MovieLens-100K is prepared into it first when it does not exist."""
    path = Path(path)
    if (path / "meta.json").exists():
        return path
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{path} is not a prepared data folder (no meta.json); run `genrec prepare`")
    from generative_rec.data import PrepareConfig, prepare

    print(f"preparing MovieLens-100K into {path}", flush=True)
    return Path(prepare(PrepareConfig(source="ml-100k", output=str(path))))


def setup_record(data, users: np.ndarray, n_users: int | None, seed: int, ks: tuple[int, ...],
                 tier: str) -> dict:
    """What every model's result must share (checked on ``--resume``)."""
    return {"data": str(Path(data.path).resolve()), "data_name": data.name, "num_users": data.num_users,
            "num_items": data.num_items, "split": "test", "mask_history": True, "ks": list(ks),
            "users": int(len(users)), "user_sample": {"n": n_users, "seed": seed}, "tier": tier}


class ModelStore:
    """``<output>/models/<name>.json`` (record) and ``.npz`` (per-user values), each written atomically."""

    def __init__(self, output: Path, setup: dict):
        self.dir, self.setup = output / "models", setup

    def done(self, name: str) -> bool:
        return (self.dir / f"{name}.json").exists() and (self.dir / f"{name}.npz").exists()

    def load(self, name: str) -> tuple[dict, dict[str, np.ndarray]]:
        rec = read_json(self.dir / f"{name}.json")
        if rec.get("setup") != self.setup:
            raise GenRecError(f"{self.dir / name}.json was computed for another set-up ({rec.get('setup')}); "
                              f"use another --output or run without --resume")
        with np.load(self.dir / f"{name}.npz") as z:
            return rec, {k: z[k] for k in z.files}

    def save(self, name: str, record: dict, arrays: dict[str, np.ndarray]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.dir / f"{name}.npz")
        atomic_write_json(self.dir / f"{name}.json", {**record, "setup": self.setup})  # written last: done


# --------------------------------------------------------------------------- the models
def run_baseline(name: str, data, users: np.ndarray, tier: Tier, seed: int, ks: tuple[int, ...],
                 item_embeddings: np.ndarray | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Tune ``name`` on validation NDCG@10 with the tier's grid, evaluate the best on the test users."""
    from generative_rec.evaluation.baselines import BASELINES, tune
    from generative_rec.evaluation.ranking import evaluate_model

    if name not in BASELINES:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(BASELINES))}, llm)")
    fixed = dict(tier.fixed.get(name, {}))
    if name in CONTENT_MODELS:
        fixed["item_embeddings"] = item_embeddings
    res = tune(name, data, grid=tier.grids.get(name), fixed=fixed, seed=seed)
    t0 = time.time()
    ev = evaluate_model(res.model.score, data, "test", users, ks, mask_history=True)
    eval_s = time.time() - t0
    info = {k: v for k, v in res.model.fit_info.items() if k != "curve"}
    record = {
        "model": name, "kind": "baseline", "metrics": ev.means, "params": res.params,
        "fixed": {k: v for k, v in fixed.items() if k != "item_embeddings"},
        "grid": tier.grids.get(name, BASELINES[name].grid), "valid_NDCG@10": res.valid_score, "seed": seed,
        "fit_s": info.get("fit_s"), "tune_s": res.seconds, "eval_s": eval_s, "fit_info": info,
        "trials": res.trials,
    }
    return record, {**_accuracy_arrays(ev.per_user), "topk": ev.ranking.topk}


def run_llm(bundle_path: Path, data, users: np.ndarray, tier: Tier, ks: tuple[int, ...],
            progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Trie-constrained top-K of the bundle's LLM for the test users (history masked): the same path as
    ``genrec eval`` (:func:`~generative_rec.evaluation.llm.evaluate_bundle_llm`)."""
    from generative_rec.bundle import Bundle
    from generative_rec.config import EvalSection
    from generative_rec.evaluation.llm import evaluate_bundle_llm

    bundle = Bundle(bundle_path)
    cfg = EvalSection(split="test", ks=list(ks), batch_size=tier.llm_batch_size, mask_history=True, baselines=[])
    res = evaluate_bundle_llm(bundle, data, users, cfg, progress=progress)
    train = bundle.metrics.get("train", {})
    cfg_file = bundle.path / "config.yaml"
    run_cfg = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) if cfg_file.exists() else {}
    record = {
        "model": "llm", "kind": "llm", "metrics": res["metrics"], "seed": None,
        "params": {"bundle": str(bundle.path), "base_model": bundle.manifest.get("base_model"),
                   "scheme": bundle.index.scheme, "template": res["template"],
                   "max_history": bundle.manifest.get("max_history"), "steps": train.get("steps")},
        "fit_s": train.get("train_seconds"), "tune_s": None, "eval_s": res["seconds"],
        "users_per_s": res["users_per_s"], "decode_stats": res["decode_stats"],
        "fit_info": {k: v for k, v in train.items() if k != "log"}, "valid": bundle.metrics.get("valid"),
        "valid_users": ((run_cfg or {}).get("train") or {}).get("eval_users"),
    }
    return record, {**_accuracy_arrays(res["per_user"]), "topk": res["topk"]}


def _accuracy_arrays(per_user: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in per_user.items() if k.startswith(("HR@", "NDCG@", "MRR"))}


class LLMSource:
    """Where the LLM comes from: an existing bundle, or a run config trained (once) into the output folder."""

    def __init__(self, bundle: str | Path | None, config: str | Path, overrides: list[str], data_path: Path,
                 output: Path, resume: bool):
        from generative_rec.config import load_config

        self.given = Path(bundle) if bundle else None
        self.cfg = None
        if self.given is None:
            self.cfg = load_config(config, overrides)
            self.cfg.data.path = str(data_path)
            self.cfg.output = str(output / "llm-bundle")
        self.config_path, self.resume, self._path = str(config), resume, None

    def base_model(self) -> str:
        if self.given is not None:
            return read_json(self.given / "bundle.json").get("base_model", "")
        return self.cfg.model.base

    def bundle(self) -> Path:
        """The bundle path, training it first when needed (``--resume`` continues from its checkpoints)."""
        if self._path is not None:
            return self._path
        if self.given is not None:
            self._path = self.given
            return self._path
        from generative_rec.training import latest_checkpoint, train

        out = Path(self.cfg.output)
        if self.resume and (out / "bundle.json").exists():
            print(f"  reusing the LLM bundle {out}", flush=True)
            self._path = out
            return out
        resume = self.resume and latest_checkpoint(out) is not None
        print(f"  training the LLM: {self.config_path} -> {out}" + (" (resuming)" if resume else ""), flush=True)
        self._path = Path(train(self.cfg, resume=resume, overwrite=not resume))
        return self._path

    def embedding_model_dir(self) -> Path:
        """The base model's folder (the bundle's merged model for the ``tiny-random`` base of tests)."""
        from generative_rec.modeling import resolve_model

        base = self.base_model()
        if base and base != "tiny-random":
            p = Path(resolve_model(base))
            if p.is_dir():
                return p
        return self.bundle() / "model"


# --------------------------------------------------------------------------- the benchmark
def run_benchmark(data: str | Path = "data/ml-100k", tier: str = "cpu", models=DEFAULT_MODELS,
                  bundle: str | Path | None = None, llm_config: str | Path | None = None,
                  llm_set: list[str] | None = None, users: int | None = None, seed: int = 0,
                  output: str | Path | None = None, resume: bool = False, ks: tuple[int, ...] = KS,
                  progress: bool = True, command: str | None = None) -> dict:
    """Run ``models`` on the same test users, save each result as it finishes, then write the report."""
    from generative_rec.data import RecData
    from generative_rec.evaluation.run import git_commit, machine
    from generative_rec.paths import repo_root

    t_start = time.time()
    if tier not in TIERS:
        raise ConfigError(f"unknown tier {tier!r} (known: {', '.join(TIERS)})")
    tier_cfg = TIERS[tier]
    models = list(dict.fromkeys(models))
    if not models:
        raise ConfigError("no models to run")
    out = Path(output or f"runs/benchmark-{tier}")
    data_path = ensure_prepared(data)
    rec_data = RecData(data_path)
    sample = rec_data.sample_users(users, seed)
    setup = setup_record(rec_data, sample, users, seed, tuple(ks), tier)
    store = ModelStore(out, setup)
    if not resume and store.dir.exists():
        shutil.rmtree(store.dir)  # a fresh run: results of an earlier run in this folder are stale
    llm_cfg = Path(llm_config) if llm_config else repo_root() / tier_cfg.llm_config
    llm_set = [*tier_cfg.llm_set, *(llm_set or [])] if bundle is None and not llm_config else (llm_set or [])
    source = LLMSource(bundle, llm_cfg, llm_set, data_path, out, resume)
    embeddings: dict[str, Any] = {}

    def item_embeddings() -> np.ndarray:
        if "matrix" not in embeddings:
            from generative_rec.embeddings import embed_texts

            model_dir = source.embedding_model_dir()
            t0 = time.time()
            print(f"  item embeddings: mean-pooled last hidden states of {model_dir} (cached)", flush=True)
            embeddings["matrix"] = embed_texts(rec_data.texts, encoder="llm", model_path=model_dir, progress=progress)
            embeddings["info"] = {"encoder": "llm", "model": str(model_dir), "pooling": "mean",
                                  "shape": list(embeddings["matrix"].shape), "seconds": round(time.time() - t0, 1)}
        return embeddings["matrix"]

    print(f"benchmark ({tier} tier): {len(models)} models on {rec_data.name}, test split, {len(sample)} users, "
          f"full ranking over {rec_data.num_items} items, history masked -> {out}", flush=True)
    records: dict[str, dict] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    resumed = []
    for n, name in enumerate(models, 1):
        if resume and store.done(name):
            records[name], arrays[name] = store.load(name)
            resumed.append(name)
            print(f"[{n}/{len(models)}] {name}: done earlier (resumed), test NDCG@10 "
                  f"{records[name]['metrics']['NDCG@10']:.4f}", flush=True)
            continue
        print(f"[{n}/{len(models)}] {name}: running", flush=True)
        t0 = time.time()
        if name == "llm":
            path = source.bundle()
            prepared_s = time.time() - t0  # training (when it happened here), writing the bundle
            rec, arr = run_llm(path, rec_data, sample, tier_cfg, tuple(ks), progress)
            rec["bundle_s"] = prepared_s
            if source.given is None:
                rec["params"]["config"] = source.config_path
                rec["params"]["overrides"] = llm_set or []
        else:
            emb = item_embeddings() if name in CONTENT_MODELS else None
            rec, arr = run_baseline(name, rec_data, sample, tier_cfg, seed, tuple(ks), emb)
            if emb is not None:
                rec["item_embeddings"] = embeddings["info"]
        rec["seconds"] = time.time() - t0
        store.save(name, rec, arr)
        records[name], arrays[name] = read_json(store.dir / f"{name}.json"), arr
        m = rec["metrics"]
        print(f"[{n}/{len(models)}] {name}: {rec['seconds']:.0f}s  test HR@10 {m['HR@10']:.4f} NDCG@10 "
              f"{m['NDCG@10']:.4f}" + (f"  (valid {rec['valid_NDCG@10']:.4f}, {rec['params']})"
                                        if rec["kind"] == "baseline" else ""), flush=True)

    report = {
        "tier": tier, "tier_settings": {"llm_config": str(llm_cfg) if bundle is None else None,
                                        "grids": tier_cfg.grids, "fixed": tier_cfg.fixed,
                                        "llm_batch_size": tier_cfg.llm_batch_size, "budget": tier_cfg.budget},
        "setup": setup, "protocol": "leave-one-out; test split; full ranking over all items; history masked; "
                                    "baselines tuned on validation NDCG@10 (all users), best configuration "
                                    "evaluated once on the test users",
        "seed": seed, "models": records, "comparison": compare(records, arrays),
        "machine": machine(), "python": platform.python_version(), "torch": _torch_version(),
        "commit": git_commit(), "command": command, "resumed": resumed,
        "wall_s": round(time.time() - t_start, 1),
        "seconds_per_model": {k: round(r.get("seconds", 0.0), 1) for k, r in records.items()},
    }
    report["table"] = results_table(records)
    write_outputs(out, report, arrays, sample)
    print()
    print(report["table"])
    print()
    print(comparison_text(report["comparison"]))
    print(f"\nwall {report['wall_s']} s; written: {out / 'results.md'}")
    return report


def _torch_version() -> str:
    import torch

    return torch.__version__


# --------------------------------------------------------------------------- comparison and outputs
def compare(records: dict[str, dict], arrays: dict[str, dict[str, np.ndarray]]) -> dict:
    """LLM vs the best baseline (highest test NDCG@10 on the same users) and vs popularity: ratios and
    paired tests."""
    baselines = [m for m in records if records[m]["kind"] == "baseline"]
    if not baselines:
        return {}
    best = max(baselines, key=lambda m: records[m]["metrics"]["NDCG@10"])
    out: dict[str, Any] = {"best_baseline": best, "metric": "NDCG@10",
                           "best_baseline_NDCG@10": records[best]["metrics"]["NDCG@10"]}
    if "llm" not in records:
        return out
    llm, base = records["llm"]["metrics"]["NDCG@10"], out["best_baseline_NDCG@10"]
    out.update({"llm_NDCG@10": llm, "ratio": llm / base if base > 0 else math.inf, "target_ratio": TARGET_RATIO})
    a = arrays["llm"]["NDCG@10"]
    if len(a) > 1:
        out["paired"] = _paired(a, arrays[best]["NDCG@10"])
        if "pop" in records and best != "pop":
            out["vs_pop"] = {"pop_NDCG@10": records["pop"]["metrics"]["NDCG@10"],
                             "ratio": llm / max(records["pop"]["metrics"]["NDCG@10"], 1e-12),
                             "paired": _paired(a, arrays["pop"]["NDCG@10"])}
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    from generative_rec.evaluation.metrics import paired_significance

    t = paired_significance(a, b)
    return {"n": t.n, "mean_diff": t.mean_diff, "t_statistic": t.t_statistic, "t_pvalue": t.t_pvalue,
            "wilcoxon_statistic": t.wilcoxon_statistic, "wilcoxon_pvalue": t.wilcoxon_pvalue}


def comparison_text(c: dict) -> str:
    if not c:
        return "No baseline was run: no comparison."
    if "llm_NDCG@10" not in c:
        return f"Best baseline: {c['best_baseline']} (test NDCG@10 {c['best_baseline_NDCG@10']:.4f}); the LLM was not run."
    s = (f"LLM vs the best baseline ({c['best_baseline']}) on test NDCG@10: {c['llm_NDCG@10']:.4f} vs "
         f"{c['best_baseline_NDCG@10']:.4f}, ratio {c['ratio']:.2f} (the full tier's target: >= {c['target_ratio']}).")
    if "paired" in c:
        p = c["paired"]
        s += (f" Paired over {p['n']} users, per-user NDCG@10: mean diff {p['mean_diff']:+.4f}, "
              f"t-test p={p['t_pvalue']:.3g}, Wilcoxon p={p['wilcoxon_pvalue']:.3g}.")
    if "vs_pop" in c:
        v, p = c["vs_pop"], c["vs_pop"]["paired"]
        s += (f" LLM vs pop: {c['llm_NDCG@10']:.4f} vs {v['pop_NDCG@10']:.4f}, ratio {v['ratio']:.2f}, mean diff "
              f"{p['mean_diff']:+.4f}, t-test p={p['t_pvalue']:.3g}, Wilcoxon p={p['wilcoxon_pvalue']:.3g}.")
    return s


def results_table(records: dict[str, dict]) -> str:
    from generative_rec.evaluation.metrics import TABLE_METRICS, format_table

    rows = {name: r["metrics"] for name, r in records.items()}
    cols = [m for m in TABLE_METRICS if any(m in r for r in rows.values())]
    return format_table(rows, cols)


def runs_table(records: dict[str, dict]) -> str:
    """Per model: what was tuned and chosen, how long it took."""
    from generative_rec.evaluation.metrics import format_table

    def secs(v) -> str:
        return "-" if v is None else f"{v:.1f}"

    rows = {}
    for name, r in records.items():
        info = r.get("fit_info", {})
        if r["kind"] == "llm":
            p = r["params"]
            chosen = f"{p['base_model']} + LoRA, {p['scheme']} IDs, {p['steps']} steps, template {p['template']}"
            trials, valid = "-", "-"
            v = (r.get("valid") or {}).get("NDCG@10")
            if v is not None:  # training's own validation, on its sample of users
                valid = f"{v:.4f} ({r.get('valid_users') or '?'} users)"
        else:
            chosen = ", ".join(f"{k}={v}" for k, v in {**r["params"], **r["fixed"]}.items()) or "-"
            trials, valid = str(len(r["trials"])), f"{r['valid_NDCG@10']:.4f}"
            if "best_epoch" in info:
                cap = r["fixed"].get("epochs")
                chosen += (f" (best epoch {info['best_epoch']} of {info.get('epochs_run')} run"
                           + ("; the cap" if cap is not None and info["best_epoch"] == cap else "") + ")")
        grid = "-" if r["kind"] == "llm" else _grid_text(r["grid"]) or "-"
        rows[name] = {"grid": grid, "chosen": chosen, "configs tried": trials, "valid NDCG@10": valid,
                      "fit s": secs(r.get("fit_s")), "tune s": secs(r.get("tune_s")), "eval s": secs(r.get("eval_s")),
                      "total s": secs(r.get("seconds"))}
    return format_table(rows)


def _grid_text(grid: dict[str, list]) -> str:
    return "; ".join(f"{k} in {{{', '.join(map(str, v))}}}" for k, v in grid.items())


def render_markdown(report: dict) -> str:
    s, t = report["setup"], report["tier_settings"]
    lines = [
        f"# Benchmark: {s['data_name']}, {report['tier']} tier", "",
        f"Test split (leave-one-out), full ranking over all {s['num_items']} items, each user's history masked; "
        f"{s['users']} of {s['num_users']} users (sample {s['user_sample']}), the same users for every model. "
        "Baselines are tuned on validation NDCG@10 (early stopping on it too); the best configuration is "
        f"evaluated once on the test users. Seed {report['seed']}.", "",
        report["table"], "",
        comparison_text(report["comparison"]), "",
        "![HR@K and NDCG@K](metric_vs_k.png) ![NDCG@10 vs popularity bias](accuracy_vs_popularity.png)", "",
        "## Runs", "", runs_table(report["models"]), "",
        f"Tier `{report['tier']}`: {t['budget']}. `grid`: the configurations tried on validation; `chosen`: the "
        "best of them plus the tier's fixed settings (epoch caps); fit s: the chosen configuration's training "
        "(for the LLM: its LoRA fine-tuning); tune s: the whole grid; eval s: ranking the test users."
        + (f" LLM trained from `{t['llm_config']}`." if t.get("llm_config") and "llm" in report["models"] else ""),
        "",
    ]
    emb = next((r["item_embeddings"] for r in report["models"].values() if "item_embeddings" in r), None)
    if emb:
        lines += [f"content_knn / mf_llm_init item vectors: {emb['pooling']}-pooled last hidden states of "
                  f"`{emb['model']}` over the item texts, shape {emb['shape']}.", ""]
    if report.get("resumed"):
        lines += [f"Resumed from earlier results: {', '.join(report['resumed'])}.", ""]
    lines += [f"Machine: {report['machine']}; torch {report['torch']}; commit {report['commit']}; "
              f"wall {report['wall_s']} s (this invocation; all models' own seconds add up to "
              f"{sum(report['seconds_per_model'].values()):.0f} s).", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def write_outputs(out: Path, report: dict, arrays: dict[str, dict[str, np.ndarray]], users: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    flat = {f"{m}/{k}": v for m, arr in arrays.items() for k, v in arr.items() if k != "topk"}
    tmp = out / f".per_user.{os.getpid()}.tmp.npz"
    np.savez(tmp, users=np.asarray(users), **flat)
    os.replace(tmp, out / "per_user.npz")
    try:
        where = f"{report['setup']['data_name']}, {report['setup']['users']} test users, {report['tier']} tier"
        plot_metric_vs_k(report["models"], report["setup"]["ks"], out / "metric_vs_k.png", where)
        plot_accuracy_vs_popularity(report["models"], out / "accuracy_vs_popularity.png", where)
        report["plots"] = ["metric_vs_k.png", "accuracy_vs_popularity.png"]
    except ImportError as e:  # matplotlib is a declared dependency; the numbers must survive without it
        log.warning("no plots: %s", e)
        report["plots"] = []
    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", render_markdown(report))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(names) -> dict[str, str]:
    """One colour per model, the same in every plot; the LLM in black."""
    palette = [f"C{i}" for i in range(10)]
    base = [n for n in names if n != "llm"]
    return {**{n: palette[i % len(palette)] for i, n in enumerate(base)}, "llm": "black"}


def plot_metric_vs_k(records: dict[str, dict], ks, path: Path, where: str = "") -> None:
    """HR@K and NDCG@K for every K, one line per model."""
    plt = _pyplot()
    colors = _colors(records)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("HR", "NDCG"), strict=True):
        for name, r in records.items():
            xs = [k for k in ks if f"{metric}@{k}" in r["metrics"]]
            llm = name == "llm"
            ax.plot(xs, [r["metrics"][f"{metric}@{k}"] for k in xs], marker="*" if llm else "o",
                    markersize=10 if llm else 6, linewidth=2.5 if llm else 1.5, color=colors[name], label=name)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_xticks(list(ks))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Accuracy at cut-off K: full ranking, history masked ({where})" if where else
                 "Accuracy at cut-off K: full ranking, history masked")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_offset(x: float, y: float, placed: list[tuple[float, float]], y_span: float) -> tuple[int, int, str]:
    """The first label position (right-above, right-below, left-above, left-below) that does not sit on an
    earlier label; records where the label went in ``placed``."""
    options = ((5, 4, "left"), (5, -12, "left"), (-5, 4, "right"), (-5, -12, "right"))
    for dx, dy, ha in options:
        key = (x + (0.08 if ha == "left" else -0.08), y + dy / 300 * y_span)
        if all(abs(key[0] - px) > 0.12 or abs(key[1] - py) > 0.05 * y_span for px, py in placed):
            placed.append(key)
            return dx, dy, ha
    placed.append((x, y))
    return options[0]


def plot_accuracy_vs_popularity(records: dict[str, dict], path: Path, where: str = "") -> None:
    """NDCG@10 against PopBias@10 (share of the top-10 among the 10% most popular items), one labelled point per model."""
    plt = _pyplot()
    colors = _colors(records)
    points = {n: (r["metrics"].get("PopBias@10"), r["metrics"].get("NDCG@10")) for n, r in records.items()}
    points = {n: (x, y) for n, (x, y) in points.items() if x is not None and y is not None
              and not (math.isnan(x) or math.isnan(y))}
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    y_span = max([y for _, y in points.values()] + [1e-9]) - min([y for _, y in points.values()] + [0.0])
    placed: list[tuple[float, float]] = []
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=140 if name == "llm" else 60, marker="*" if name == "llm" else "o",
                   color=colors[name], zorder=3)
        dx, dy, ha = _label_offset(x, y, placed, y_span)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=9)
    ax.set_xlabel("PopBias@10 (share of top-10 in the 10% most popular items)")
    ax.set_ylabel("NDCG@10")
    ax.set_xlim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(f"Accuracy vs popularity bias\n({where})" if where else "Accuracy vs popularity bias", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data", default="data/ml-100k",
                   help="prepared data folder (MovieLens-100K is prepared into it when missing)")
    s.add_argument("--tier", default="cpu", choices=sorted(TIERS), help="grids and budgets (see the module doc)")
    s.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated; 'llm' is the fine-tuned LLM")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--bundle", help="evaluate this LLM bundle (no training)")
    g.add_argument("--llm-config", dest="llm_config",
                   help="train the LLM from this run config first (default: the tier's config)")
    s.add_argument("--set", dest="llm_set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the LLM config (e.g. train.max_steps=50)")
    s.add_argument("--users", type=int, help="seeded sample of N test users (default: all)")
    s.add_argument("--seed", type=int, default=0, help="seed of the user sample and of every baseline")
    s.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    s.add_argument("--output", help="output folder (default runs/benchmark-<tier>)")
    s.add_argument("--resume", action="store_true",
                   help="keep the models already finished in the output folder (and the LLM bundle trained there)")


def command_line(a: argparse.Namespace) -> str:
    """The ``genrec benchmark`` command that reproduces these options (recorded in the report)."""
    parts = ["genrec benchmark", f"--data {a.data}", f"--tier {a.tier}", f"--models {a.models}"]
    parts += [f"--bundle {a.bundle}"] if a.bundle else [f"--llm-config {a.llm_config}"] if a.llm_config else []
    parts += [f"--set {o}" for o in a.llm_set]
    parts += [f"--users {a.users}"] if a.users is not None else []
    parts += [f"--seed {a.seed}"] + ([f"--threads {a.threads}"] if a.threads else [])
    parts += [f"--output {a.output}"] if a.output else []
    return " ".join(parts + (["--resume"] if a.resume else []))


def main_args(a: argparse.Namespace, command: str | None = None) -> dict:
    """Run the benchmark from parsed :func:`add_arguments` options."""
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    command = command or command_line(a)
    return run_benchmark(a.data, a.tier, [m.strip() for m in a.models.split(",") if m.strip()], a.bundle,
                         a.llm_config, a.llm_set, a.users, a.seed, a.output, a.resume, command=command)


def register_cli(subparsers) -> None:
    s = subparsers.add_parser("benchmark", help="every model on the same users: results.json, table, plots",
                              description=__doc__.split("\n\n")[0])
    add_arguments(s)
    s.set_defaults(fn=main_args)
