"""Item-ID scheme ablation: the same model, data, prompts and training budget for every ID scheme.

    python bench/indexing_ablation.py --steps 120 --users 200                 # CPU tier (this machine)
    python bench/indexing_ablation.py --steps 2000 --users 0 --batch-size 32  # full tier on a GPU

For each scheme: train SmolLM2-135M + LoRA (atomic/collaborative/semantic add tokens; sequential, random and
title use ordinary tokens) on MovieLens-100K with the same number of optimizer steps and examples, then
rank the full catalogue for the same seeded sample of test users (history masked). Writes a Markdown
table and a bar plot to bench/results/ (with the command, machine and commit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMES = ["atomic", "sequential", "random", "collaborative", "semantic", "title"]


def run_config(scheme: str, a) -> dict:
    # ID-only history in one compact template for every scheme, so only the IDs differ
    return {
        "data": {"path": a.data, "prepare": {"source": "ml-100k"}},
        "index": {"scheme": scheme, "options": {"encoder": "minilm"} if scheme == "semantic" else {}},
        "model": {"base": a.model, "dtype": "auto"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "prompts": {"tasks": {"next_item": 1.0}, "templates": ["next_item/list-ids"],
                    "inference": "next_item/list-ids", "max_history": a.max_history},
        "train": {"max_steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "save_every": 0,
                  "eval_users": 50, "log_every": 10, "seed": a.seed},
        "output": str(Path(a.work) / scheme),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schemes", nargs="+", default=SCHEMES)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str(ROOT / "data" / "ml-100k"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-history", dest="max_history", type=int, default=20)
    p.add_argument("--users", type=int, default=200, help="test users (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "runs" / "ablation"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--resume", action="store_true",
                   help="keep the schemes already measured in --work/rows.json (a killed run continues)")
    a = p.parse_args()

    from generative_rec.config import EvalSection, RunConfig, from_dict
    from generative_rec.evaluation.run import evaluate_bundle, git_commit, machine
    from generative_rec.io import atomic_write_json, read_json
    from generative_rec.training import train

    state = Path(a.work) / "rows.json"  # written after every scheme
    rows = read_json(state) if a.resume and state.exists() else {}
    pop = rows.pop("(popularity)", None)
    for scheme in a.schemes:
        if scheme in rows:
            print(f"{scheme}: kept from {state}", flush=True)
            continue
        cfg = from_dict(RunConfig, run_config(scheme, a))
        t0 = time.time()
        bundle = train(cfg, overwrite=True)
        train_s = time.time() - t0
        ecfg = EvalSection(users=a.users or None, seed=a.seed, baselines=["pop"] if pop is None else [])
        rep = evaluate_bundle(bundle, ecfg, progress=False)
        res = rep["results"]
        llm = next(v for k, v in res.items() if k.startswith("LLM"))
        m = json.loads((Path(bundle) / "metrics.json").read_text())["train"]
        idx = json.loads((Path(bundle) / "index.json").read_text())
        rows[scheme] = {
            "HR@10": llm["HR@10"], "NDCG@10": llm["NDCG@10"], "Validity": llm["Validity"],
            "Coverage@10": llm["Coverage@10"], "new tokens": len(idx["new_tokens"]),
            "ID tokens": round(sum(len(s) for s in _id_sequences(bundle)) / len(idx["item_ids"]), 2),
            "index build s": idx["meta"].get("build_seconds"), "train tokens": m["tokens"],
            "train s": round(train_s, 1), "eval users/s": llm["users/s"],
        }
        if "pop" in res:
            pop = {"HR@10": res["pop"]["HR@10"], "NDCG@10": res["pop"]["NDCG@10"]}
        print(json.dumps({scheme: rows[scheme]}), flush=True)
        atomic_write_json(state, rows | {"(popularity)": pop})
    rows = {s: rows[s] for s in a.schemes} | {"(popularity)": pop}
    write(rows, a, machine(), git_commit())


def _id_sequences(bundle) -> list[list[int]]:
    from generative_rec.bundle import Bundle

    b = Bundle(bundle)
    return [b.trie.sequence(i) for i in range(b.num_items)]


def _cells(row: dict) -> dict:
    """Accuracy with 4 decimals; counts as integers; seconds and rates with 1-2 decimals."""
    fmt = {"ID tokens": "{:.2f}", "index build s": "{:.2f}", "train s": "{:.0f}", "eval users/s": "{:.2f}"}
    return {k: fmt[k].format(v) if k in fmt and v is not None else v for k, v in row.items()}


def write(rows: dict, a, machine: str, commit: str) -> None:
    from generative_rec.evaluation.metrics import format_table
    from generative_rec.io import atomic_write_json, atomic_write_text

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["HR@10", "NDCG@10", "Validity", "Coverage@10", "new tokens", "ID tokens", "index build s",
            "train tokens", "train s", "eval users/s"]
    cmd = "python bench/indexing_ablation.py " + " ".join(sys.argv[1:])
    text = [
        "# Item-ID scheme ablation (MovieLens-100K, leave-one-out, test split, full ranking, history masked)", "",
        f"Model {a.model} + LoRA r=16; {a.steps} optimizer steps x batch {a.batch_size} for every scheme; "
        f"template next_item/list-ids (ID-only history, last {a.max_history} items); "
        f"{a.users or 'all'} seeded test users.", "",
        format_table({name: _cells(r) for name, r in rows.items()}, cols), "",
        "Schemes that add tokens (atomic, collaborative, semantic) start their new LM-head rows from training "
        "popularity (`model.popularity_start`, the default); sequential, random and title reuse the "
        "vocabulary's digit and word tokens, whose head rows stay pretrained.", "",
        f"Command: `{cmd}`  ", f"Machine: {machine}  ", f"Commit: {commit}; {time.strftime('%Y-%m-%d')}", "",
    ]
    name = f"indexing_ablation_{'cpu' if 'GPU' not in machine or 'no GPU' in machine else 'gpu'}"
    atomic_write_text(out / f"{name}.md", "\n".join(text))
    atomic_write_json(out / f"{name}.json", rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = [s for s in rows if not s.startswith("(")]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, metric in enumerate(["HR@10", "NDCG@10"]):
        ax[k].bar(schemes, [rows[s][metric] for s in schemes], color="#4c72b0")
        if "(popularity)" in rows:
            ax[k].axhline(rows["(popularity)"][metric], color="#c44e52", ls="--", label="popularity")
            ax[k].legend()
        ax[k].set_title(f"{metric} by item-ID scheme ({a.steps} steps)")
        ax[k].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    print(f"wrote {out / name}.md/.png")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
