"""Ablation of the LLM's collaborative help at one training budget, on the same test users and prompts.

    python bench/quality.py --tier cpu                 # first: the benchmark run whose baselines we compare to
    python bench/ablation.py                           # atomic; +start; +fuse; +start+distill; multi-token+start
    python bench/ablation.py --steps 40 --variants atomic,start --output /tmp/abl   # a quick try
    python bench/ablation.py --resume                  # a killed run keeps the variants it finished

Every variant trains from the same base config (``--config``, default the CPU tier's) with its own
overrides, the same steps, batches and seed, then ranks the full catalogue for the benchmark's test users
(history masked) with the same code as ``genrec benchmark``. Each variant is compared, per user, with the
best classic baseline of the benchmark run in ``--benchmark`` (paired t-test and Wilcoxon on NDCG@10).
Configurations were chosen on validation users; this table reports them on the test users once.
Writes ``bench/results/ablation-cpu.{md,json}`` with the command, machine and commit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> overrides of the base config (``--set`` syntax); the base config is the CPU tier's (collaborative start)
VARIANTS = {
    "atomic": ["model.collaborative={source: null}"],
    "atomic + collaborative start": [],
    "atomic + collaborative fuse": ["model.collaborative={source: sasrec, mode: fuse, epochs: 50, params: {dropout: 0.2}}"],
    "atomic + start + distillation": ["model.collaborative={source: sasrec, epochs: 50, params: {dropout: 0.2}, "
                                      "distill: 0.5}"],
    # the best multi-token scheme of bench/results/indexing_ablation_cpu.md; its level tokens start from the mean
    # source embedding of the items that share them (sequential IDs reuse digit tokens: nothing to start)
    "collaborative IDs + collaborative start": ["index.scheme=collaborative", "train.loss_vocab=full"],
}
SHORT = {"atomic": "atomic", "start": "atomic + collaborative start", "fuse": "atomic + collaborative fuse",
         "distill": "atomic + start + distillation", "multi-token": "collaborative IDs + collaborative start"}
COLUMNS = ["NDCG@10", "HR@10", "MRR@10", "Coverage@10", "PopBias@10", "Novelty@10"]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def run_variant(name: str, overrides: list[str], a, work: Path, data, users) -> dict:
    from generative_rec.benchmark import TIERS, run_llm
    from generative_rec.config import load_config
    from generative_rec.io import atomic_write_json, read_json
    from generative_rec.training import train

    folder = work / slug(name)
    done = folder / "result.json"
    if a.resume and done.exists():
        print(f"{name}: done earlier (resumed)", flush=True)
        rec = read_json(done)
        with np.load(folder / "per_user.npz") as z:
            rec["per_user"] = {k: z[k] for k in z.files}
        return rec
    sets = [f"data.path={a.data}", f"train.max_steps={a.steps}", "train.eval_every=0", "train.save_every=0",
            f"output={folder / 'bundle'}", *overrides, *a.set]
    cfg = load_config(a.config, sets)
    print(f"{name}: training {a.steps} steps ({' '.join(overrides) or 'the base config'})", flush=True)
    t0 = time.time()
    bundle = train(cfg, overwrite=True)
    train_wall = time.time() - t0
    rec, arrays = run_llm(Path(bundle), data, users, TIERS["cpu"], (1, 5, 10, 20), progress=True)
    out = {"name": name, "overrides": overrides, "metrics": rec["metrics"], "train_wall_s": round(train_wall, 1),
           "train_s": rec["fit_s"], "eval_s": round(rec["eval_s"], 1), "valid": rec["valid"],
           "scheme": rec["params"]["scheme"], "final_loss": rec["fit_info"].get("final_loss"),
           "tokens_per_s": rec["fit_info"].get("tokens_per_s")}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".per_user.tmp.npz"
    np.savez(tmp, **{k: v for k, v in arrays.items() if k != "topk"})
    tmp.replace(folder / "per_user.npz")
    atomic_write_json(done, out)
    out["per_user"] = {k: v for k, v in arrays.items() if k != "topk"}
    return out


def main(argv: list[str] | None = None) -> None:
    from generative_rec.benchmark import ModelStore
    from generative_rec.data import RecData
    from generative_rec.evaluation.metrics import format_table, paired_significance
    from generative_rec.evaluation.run import git_commit, machine
    from generative_rec.io import atomic_write_json, atomic_write_text, read_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "train" / "configs" / "cpu_tier.yaml"))
    p.add_argument("--benchmark", default=str(ROOT / "runs" / "benchmark-cpu"),
                   help="a finished `genrec benchmark` output folder: its users and its best baseline")
    p.add_argument("--steps", type=int, default=300, help="training steps of every variant (the budget)")
    p.add_argument("--variants", default=",".join(SHORT), help=f"comma-separated, of {', '.join(SHORT)}")
    p.add_argument("--set", action="append", default=[], help="override for every variant")
    p.add_argument("--output", default=str(ROOT / "runs" / "ablation"))
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "ablation-cpu"),
                   help="where the .md and .json go (stem)")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)
    unknown = [v for v in a.variants.split(",") if v not in SHORT]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(SHORT)}")
    bench = Path(a.benchmark)
    report = read_json(bench / "results.json")
    setup = report["setup"]
    a.data = setup["data"]
    data = RecData(Path(a.data))
    users = data.sample_users(setup["user_sample"]["n"], setup["user_sample"]["seed"])
    best = report["comparison"]["best_baseline"]
    _, best_arrays = ModelStore(bench, setup).load(best)
    best_metrics = report["models"][best]["metrics"]
    work = Path(a.output)
    t_start = time.time()
    rows = [run_variant(SHORT[v], VARIANTS[SHORT[v]], a, work, data, users) for v in a.variants.split(",")]

    table, results = {}, []
    for r in rows:
        t = paired_significance(r["per_user"]["NDCG@10"], best_arrays["NDCG@10"])
        ratio = r["metrics"]["NDCG@10"] / best_metrics["NDCG@10"]
        table[r["name"]] = {**{c: r["metrics"][c] for c in COLUMNS}, f"ratio vs {best}": ratio,
                            "mean diff": t.mean_diff, "t-test p": f"{t.t_pvalue:.2g}",
                            "Wilcoxon p": f"{t.wilcoxon_pvalue:.2g}", "train s": f"{r['train_s']:.0f}",
                            "valid NDCG@10": (r.get("valid") or {}).get("NDCG@10")}
        results.append({k: v for k, v in r.items() if k != "per_user"}
                       | {"ratio": ratio, "paired": t.__dict__})
    table[f"{best} (benchmark)"] = {c: best_metrics.get(c) for c in COLUMNS}
    cmd = " ".join(["python bench/ablation.py", *(sys.argv[1:] if argv is None else argv)])
    md = "\n".join([
        f"# Ablation at one budget: {a.steps} LoRA steps (batch as in the config), {len(users)} test users", "",
        f"- Command: `{cmd}`",
        f"- Base config: `{Path(a.config).relative_to(ROOT) if Path(a.config).is_relative_to(ROOT) else a.config}`; "
        "every variant: same steps, batches, seed and prompts; full ranking over every item, history masked.",
        f"- Compared per user with the benchmark's best classic baseline, **{best}** "
        f"(`{bench.relative_to(ROOT) if bench.is_relative_to(ROOT) else bench}`, same users): paired t-test and "
        "Wilcoxon on NDCG@10.",
        f"- Machine: {machine()}; commit {git_commit()}; wall {time.time() - t_start:.0f} s "
        "(variants finished in an earlier run are resumed, not re-timed).", "",
        format_table(table, [*COLUMNS, f"ratio vs {best}", "mean diff", "t-test p", "Wilcoxon p", "train s",
                             "valid NDCG@10"]),
        "",
        "valid NDCG@10: the end-of-training validation of each run (the config's `train.eval_users` seeded "
        "validation users); the configs were chosen on validation, never on this table.",
        "PopBias@10: share of each top-10 among the 10 % most popular training items; "
        "Coverage@10: share of the catalogue in anyone's top-10.", ""])
    out = Path(a.results)
    atomic_write_text(out.with_suffix(".md"), md)
    atomic_write_json(out.with_suffix(".json"), {
        "command": cmd, "config": a.config, "steps": a.steps, "benchmark": str(bench), "best_baseline": best,
        "best_baseline_metrics": best_metrics, "users": len(users), "variants": results,
        "machine": machine(), "commit": git_commit()})
    print(md)


if __name__ == "__main__":
    main()
