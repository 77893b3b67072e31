"""Runs every model on the same users (the LLM through ``evaluation.llm.evaluate_bundle_llm``, the
baselines tuned on validation), saves each result as it finishes, and writes the report."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from generative_rec.benchmark.plots import plot_accuracy_vs_popularity, plot_metric_vs_k
from generative_rec.benchmark.store import ModelStore, ensure_prepared, setup_record
from generative_rec.benchmark.tables import compare, comparison_text, render_markdown, results_table
from generative_rec.benchmark.tiers import CONTENT_MODELS, DEFAULT_MODELS, KS, TIERS, Tier
from generative_rec.errors import ConfigError
from generative_rec.io import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)


def run_baseline(name: str, data, users: np.ndarray, tier: Tier, seed: int, ks: tuple[int, ...],
                 item_embeddings: np.ndarray | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Tune ``name`` on validation NDCG@10 with the tier's grid, evaluate the best on the test users."""
    from generative_rec.evaluation.baselines import BASELINES, tune
    from generative_rec.evaluation.ranking import evaluate_model
    from generative_rec.evaluation.slices import rank_among_new

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
    cold = cold_start_views(data, users, ev.per_user, lambda: rank_among_new(res.model.score, data, users, "test", ks))
    record = {
        "model": name, "kind": "baseline", "metrics": ev.means, "params": res.params,
        "fixed": {k: v for k, v in fixed.items() if k != "item_embeddings"},
        "grid": tier.grids.get(name, BASELINES[name].grid), "valid_NDCG@10": res.valid_score, "seed": seed,
        "fit_s": info.get("fit_s"), "tune_s": res.seconds, "eval_s": eval_s, "fit_info": info,
        "trials": res.trials, **cold,
    }
    return record, {**_accuracy_arrays(ev.per_user), "topk": ev.ranking.topk}


def run_llm(bundle_path: Path, data, users: np.ndarray, tier: Tier, ks: tuple[int, ...],
            progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Trie-constrained top-K of the bundle's LLM for the test users (history masked): the same path as
    ``genrec eval`` (:func:`~generative_rec.evaluation.llm.evaluate_bundle_llm`)."""
    from generative_rec.bundle import Bundle
    from generative_rec.config import EvalSection
    from generative_rec.evaluation.llm import evaluate_bundle_llm, rank_bundle_among_new

    bundle = Bundle(bundle_path, catalogue_version=0)  # the trained catalogue: the one the data describes
    cfg = EvalSection(split="test", ks=list(ks), batch_size=tier.llm_batch_size, mask_history=True, baselines=[])
    res = evaluate_bundle_llm(bundle, data, users, cfg, progress=progress)
    cold = cold_start_views(data, users, res["per_user"],
                            lambda: rank_bundle_among_new(bundle, data, users, cfg, res["model"], progress))
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
        "valid_users": ((run_cfg or {}).get("train") or {}).get("eval_users"), **cold,
    }
    return record, {**_accuracy_arrays(res["per_user"]), "topk": res["topk"]}


def cold_start_views(data, users: np.ndarray, per_user: dict[str, np.ndarray], among_new) -> dict:
    """``slices`` (new / known target, history length) of every model's per-user values and, when some test
    target is a new item, ``new_only``: ``among_new()``, the ranking among the new items only."""
    from generative_rec.evaluation.slices import slice_masks, slice_means

    masks = slice_masks(data, users, "test")
    out: dict = {"slices": slice_means(per_user, masks)}
    if masks["new target"].any():
        t0 = time.time()
        out["new_only"] = {**among_new(), "seconds": round(time.time() - t0, 2)}
    return out


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
