"""Learning curve of the LLM: validation NDCG@10 against training tokens and wall minutes, per variant.

    python bench/learning_curve.py                                    # the recorded CPU run (hours on 2 cores)
    python bench/learning_curve.py --steps 40 --eval-every 20 --valid-users 50 --variants plain
    python bench/learning_curve.py --resume                           # a killed run continues

Every variant trains from the same base config (``--config``) with its own overrides, the same steps,
batches and seed, and is validated every ``--eval-every`` steps on the same seeded sample of
``--valid-users`` validation users (full ranking, history masked). Validation time is not counted in the
minutes axis. The test split is never read. Writes ``bench/results/learning_curve.{md,json,png}`` with
the command, machine and commit; each finished variant is saved at once (``--resume`` skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> overrides of the base config (``--set`` syntax); the base (cpu_tier.yaml) has the collaborative start
VARIANTS = {
    "plain": ["model.collaborative={source: null}"],
    "collab-start": [],
    "collab-start+distill": ["model.collaborative={source: sasrec, epochs: 50, params: {dropout: 0.2}, distill: 0.5}"],
}


def run_variant(name: str, overrides: list[str], a, work: Path) -> dict:
    from generative_rec.config import load_config
    from generative_rec.io import atomic_write_json, read_json
    from generative_rec.training import train

    done = work / name / "curve.json"
    if a.resume and done.exists():
        print(f"{name}: done earlier (resumed)", flush=True)
        return read_json(done)
    sets = [f"train.max_steps={a.steps}", f"train.eval_every={a.eval_every}", f"train.eval_users={a.valid_users}",
            "train.save_every=0", f"output={work / name / 'bundle'}", *overrides, *a.set]
    cfg = load_config(a.config, sets)
    print(f"{name}: training {a.steps} steps ({' '.join(overrides) or 'base config'})", flush=True)
    t0 = time.time()
    out = train(cfg, overwrite=True)
    wall = time.time() - t0
    metrics = read_json(out / "metrics.json")
    train_info = metrics["train"]
    points = []
    for r in train_info["log"]:
        if "valid_NDCG@10" in r:
            points.append({"step": r["step"], "tokens": r["tokens"], "train_s": r["train_s"],
                           "NDCG@10": r["valid_NDCG@10"], "HR@10": r["valid_HR@10"]})
    final = metrics.get("valid") or {}
    points.append({"step": train_info["steps"], "tokens": train_info["tokens"],
                   "train_s": train_info["train_seconds"] - train_info.get("validation_seconds", 0.0),
                   "NDCG@10": final.get("NDCG@10"), "HR@10": final.get("HR@10")})
    rec = {"name": name, "overrides": overrides, "points": points, "wall_s": round(wall, 1),
           "tokens_per_s": train_info["tokens_per_s"], "final_loss": train_info["final_loss"],
           "start": train_info.get("start"), "collaborative_fit": train_info.get("collaborative")}
    atomic_write_json(done, rec)
    return rec


def write_report(rows: list[dict], a, command: str, out_dir: Path) -> None:
    from generative_rec.evaluation.run import git_commit, machine
    from generative_rec.io import atomic_write_json, atomic_write_text

    steps = sorted({p["step"] for r in rows for p in r["points"]})
    lines = [
        "# Learning curve: validation NDCG@10 against training tokens and minutes", "",
        f"Base config `{Path(a.config).relative_to(ROOT) if Path(a.config).is_absolute() else a.config}`"
        f" + each variant's overrides; {a.steps} steps; validated every {a.eval_every} steps on the same "
        f"{a.valid_users} validation users (seeded sample; full ranking, history masked). Minutes exclude "
        "validation time. The test split is not read.", "", *([a.note, ""] if a.note else []),
        "| step | " + " | ".join(f"{r['name']} NDCG@10 | tokens | min" for r in rows) + " |",
        "|---:|" + "---:|---:|---:|" * len(rows),
    ]
    for s in steps:
        cells = []
        for r in rows:
            p = next((p for p in r["points"] if p["step"] == s), None)
            cells += ["-", "-", "-"] if p is None or p["NDCG@10"] is None else [
                f"{p['NDCG@10']:.4f}", f"{p['tokens'] / 1000:.0f}k", f"{p['train_s'] / 60:.1f}"]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "| variant | overrides | tokens/s | final loss | wall s |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | `{' '.join(r['overrides']) or '-'}` | {r['tokens_per_s']} | "
                     f"{r['final_loss']} | {r['wall_s']} |")
    lines += ["", "![NDCG@10 vs tokens and minutes](learning_curve.png)", "",
              f"Machine: {machine()}; commit {git_commit()}.", "", f"Command: `{command}`", ""]
    report = {"rows": rows, "steps": a.steps, "eval_every": a.eval_every, "valid_users": a.valid_users,
              "config": str(a.config), "machine": machine(), "commit": git_commit(), "command": command}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "learning_curve.json", report)
    atomic_write_text(out_dir / "learning_curve.md", "\n".join(lines))
    plot(rows, out_dir / "learning_curve.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for r in rows:
        pts = [p for p in r["points"] if p["NDCG@10"] is not None]
        axes[0].plot([p["tokens"] / 1000 for p in pts], [p["NDCG@10"] for p in pts], marker="o", label=r["name"])
        axes[1].plot([p["train_s"] / 60 for p in pts], [p["NDCG@10"] for p in pts], marker="o", label=r["name"])
    axes[0].set_xlabel("training tokens (thousands)")
    axes[1].set_xlabel("training minutes (validation excluded)")
    axes[0].set_ylabel("validation NDCG@10")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "train" / "configs" / "cpu_tier.yaml"))
    p.add_argument("--variants", nargs="+", default=["plain", "collab-start"], choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--eval-every", dest="eval_every", type=int, default=150)
    p.add_argument("--valid-users", dest="valid_users", type=int, default=300)
    p.add_argument("--set", action="append", default=[], help="extra override for every variant")
    p.add_argument("--work", default=str(ROOT / "runs" / "learning-curve"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--note", default="", help="a line for the report (e.g. how the variants were run)")
    a = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["python bench/learning_curve.py", *argv])
    rows = []
    for name in a.variants:
        rows.append(run_variant(name, VARIANTS[name], a, Path(a.work)))
        write_report(rows, a, command, Path(a.out))  # after every variant: a partial report survives a kill
    print(json.dumps({r["name"]: r["points"][-1] for r in rows}, indent=1))


if __name__ == "__main__":
    main()
