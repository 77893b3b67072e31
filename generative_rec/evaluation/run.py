"""``genrec eval``: the bundle's LLM and baselines on the same users of the same split, one table."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from generative_rec.bundle import Bundle
from generative_rec.config import EvalSection
from generative_rec.data import RecData
from generative_rec.evaluation.llm import evaluate_bundle_llm, llm_name
from generative_rec.evaluation.metrics import TABLE_METRICS, format_table, paired_significance
from generative_rec.evaluation.ranking import evaluate_model
from generative_rec.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)



def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads, {gpu}"


def git_commit() -> str:
    """Short hash of this checkout's HEAD, marked when the tree has uncommitted changes."""
    cwd = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=cwd, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=cwd, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + (" + uncommitted changes" if dirty else "")) if head else "unknown"


def fit_baseline(name: str, data: RecData, seed: int = 0, item_embeddings: np.ndarray | None = None):
    from generative_rec.evaluation.baselines import make

    params = {"item_embeddings": item_embeddings} if name in ("content_knn", "mf_llm_init") else {}
    return make(name, **params).fit(data, seed=seed)


def evaluate_bundle(bundle_path: str | Path, cfg: EvalSection | None = None, data_path: str | Path | None = None,
                    output: str | Path | None = None, progress: bool = True) -> dict:
    """Evaluate a bundle's LLM and ``cfg.baselines`` on the same sample of users; write JSON + Markdown.

    ``cfg`` (:class:`~generative_rec.config.EvalSection`, the ``eval:`` section of a run config) holds every
    setting; ``cfg.explain_users`` > 0 also explains the held-out target and the top-1 recommendation of that
    many users (seeded sample) and reports faithfulness (and BLEU/ROUGE on review data)."""
    cfg = cfg or EvalSection()
    bundle = Bundle(bundle_path, catalogue_version=0)  # the trained catalogue: the one the data describes
    data = RecData(data_path or bundle.manifest["data"]["path"])
    sample = data.sample_users(cfg.users, cfg.seed)
    ks = tuple(cfg.ks)
    t0 = time.time()
    res = evaluate_bundle_llm(bundle, data, sample, cfg, progress=progress)
    name = llm_name(bundle)
    table = {name: {**res["metrics"], "users/s": round(res["users_per_s"], 2)}}
    per_user = {name: res["per_user"]["NDCG@10"]} if 10 in ks else {}
    for b in cfg.baselines:
        tb = time.time()
        model_b = fit_baseline(b, data, cfg.seed)
        ev = evaluate_model(model_b.score, data, cfg.split, sample, ks, cfg.mask_history)
        table[b] = {**ev.means, "fit_s": round(time.time() - tb, 1)}
        if 10 in ks:
            per_user[b] = ev.per_user["NDCG@10"]
    sig = {}
    if per_user and len(per_user) > 1 and len(sample) > 1:
        base_names = [b for b in per_user if b != name]
        best = max(base_names, key=lambda b: float(np.mean(per_user[b])))
        t = paired_significance(per_user[name], per_user[best])
        sig = {"vs": best, "metric": "NDCG@10", **t.__dict__}
    report = {
        "bundle": str(bundle.path), "data": str(data.path), "split": cfg.split, "users": len(sample),
        "user_sample": {"n": cfg.users, "seed": cfg.seed}, "mask_history": cfg.mask_history,
        "template": res["template"], "results": table, "significance": sig,
        "llm_decode": res["decode_stats"], "llm_seconds": round(res["seconds"], 1),
        "machine": machine(), "commit": git_commit(), "wall_s": round(time.time() - t0, 1),
        "examples": example_rows(bundle, data, res, n=3),
    }
    if cfg.explain_users > 0:
        from generative_rec.explain.evaluate import evaluate_bundle_explanations

        report["explanations"] = evaluate_bundle_explanations(bundle, data, cfg.split, n=cfg.explain_users,
                                                              seed=cfg.seed, model=res["model"],
                                                              batch_size=cfg.batch_size, progress=progress)
    cols = [m for m in TABLE_METRICS if any(m in r for r in table.values())]
    report["table"] = format_table(table, cols)
    if output:
        out = Path(output)
        atomic_write_json(out / "results.json", report)
        atomic_write_text(out / "results.md", render_markdown(report))
    return report


def example_rows(bundle: Bundle, data: RecData, res: dict, n: int = 3) -> list[dict]:
    rows = []
    for j in range(min(n, len(res["users"]))):
        u = int(res["users"][j])
        hist = data.history(u, "test")
        rows.append({
            "user_id": data.user_ids[u],
            "history": [data.titles[i] for i in hist[-10:]],
            "target": data.titles[int(res["targets"][j])],
            "top10": [(bundle.item_ids[i], bundle.titles[i], round(float(s), 3))
                      for i, s in zip(res["topk"][j][:10], res["scores"][j][:10], strict=True) if i >= 0],
        })
    return rows


def render_markdown(report: dict) -> str:
    lines = [f"# Evaluation: {report['bundle']}", "",
             f"Split `{report['split']}` (leave-one-out, full ranking over all items, history masked: "
             f"{report['mask_history']}), {report['users']} users (sample {report['user_sample']}); "
             f"template `{report['template']}`.", "", report["table"], ""]
    if report.get("significance"):
        s = report["significance"]
        lines += [f"Paired test, LLM vs {s['vs']} on per-user {s['metric']}: mean diff {s['mean_diff']:+.4f}, "
                  f"t-test p={s['t_pvalue']:.3g}, Wilcoxon p={s['wilcoxon_pvalue']:.3g} (n={s['n']}).", ""]
    if report.get("explanations"):
        from generative_rec.explain.evaluate import render_markdown as explanations_markdown

        lines += [explanations_markdown(report["explanations"])]
    lines += [f"Machine: {report['machine']}; commit {report['commit']}; wall {report['wall_s']} s.", ""]
    return "\n".join(lines)


def print_examples(report: dict, n: int = 1) -> str:
    out = []
    for ex in report["examples"][:n]:
        out.append(f"User {ex['user_id']} — last {len(ex['history'])} items of the history (oldest first):")
        out += [f"    {t}" for t in ex["history"]]
        out.append(f"Held-out next item: {ex['target']}")
        out.append("Top-10 (trie-constrained beam search, sequence log-prob):")
        for r, (iid, title, score) in enumerate(ex["top10"], 1):
            mark = "  <== held-out item" if title == ex["target"] else ""
            out.append(f"  {r:2d}. [{iid}] {title}  ({score}){mark}")
    return "\n".join(out)
