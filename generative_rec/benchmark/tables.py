"""The benchmark's comparison (LLM vs the best baseline and vs popularity) and its Markdown."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from generative_rec.benchmark.tiers import TARGET_RATIO


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


def slices_table(records: dict[str, dict], metric: str = "NDCG@10") -> str:
    """``metric`` per model and slice (new / known target, history length); ``-`` on an empty slice. The
    header row gives each slice's number of users."""
    from generative_rec.evaluation.metrics import format_table

    names = [n for n, r in records.items() if "slices" in r]
    if not names:
        return ""
    first = records[names[0]]["slices"]
    cols = {sl: f"{sl} ({v['users']})" for sl, v in first.items()}
    rows = {}
    for n in names:
        sl = records[n]["slices"]
        rows[n] = {cols[c]: sl[c].get(metric) if c in sl and sl[c].get(metric) is not None else "-" for c in cols}
        no = records[n].get("new_only")
        if no and no.get("users"):
            rows[n][f"among new items only ({no['users']})"] = no.get(metric, "-")
    return format_table(rows)


def _grid_text(grid: dict[str, list]) -> str:
    return "; ".join(f"{k} in {{{', '.join(map(str, v))}}}" for k, v in grid.items())


def _slices_section(records: dict[str, dict]) -> list[str]:
    table = slices_table(records)
    if not table:
        return []
    return ["## By kind of user (NDCG@10)", "",
            "Users whose test target is a *new item* (no interaction in any training part: no ID-only model has "
            "seen it) vs a known item, and by history length (items the model may see); the number of users in "
            "brackets. *Among new items only*: the users with a new target, ranking only the new items "
            "(every known item masked).", "", table, ""]


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
        *_slices_section(report["models"]),
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
