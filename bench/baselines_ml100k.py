"""Classic baselines on MovieLens-100K: tune on validation NDCG@10, report the test split.

Protocol: leave-one-out, all 943 users, full ranking over all 1682 items, the user's history masked.
Every model trains on ``RecData.train_sequences()`` only; each point of its grid is fitted (early
stopping on validation NDCG@10 where the model trains iteratively), the configuration with the best
validation NDCG@10 is kept and evaluated once on the test split — by ``genrec benchmark``'s own
:func:`~generative_rec.benchmark.run_baseline` (one evaluation path); this script adds the item-embedding
choices for the content models, the textbook item-kNN and a paired test of every pair.

Command (one CPU thread; ~15-25 min on a shared 2-core machine)::

    python bench/baselines_ml100k.py --seed 0
    python bench/baselines_ml100k.py --models pop,itemknn --quick        # a 1-minute check
    python bench/baselines_ml100k.py --item-embeddings llm             # SmolLM2 mean-pooled states
    python bench/baselines_ml100k.py --item-embeddings runs/emb.npy    # any matrix [1682, d]

``--item-embeddings`` feeds the content models (content_knn, mf_llm_init): ``genres`` (default, the
multi-hot genre vectors of ML-100K), ``llm`` / ``minilm`` (:func:`generative_rec.embeddings.embed_texts`
over the item texts, cached on disk) or a ``.npy`` file; the table marks which one was used. Prints two Markdown tables and writes
``results.json`` and ``per_user_ndcg10.npz`` (for paired tests against the LLM) to ``--output``.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from generative_rec.benchmark import CONTENT_MODELS, KS, Tier, run_baseline
from generative_rec.data import RecData
from generative_rec.evaluation.baselines import BASELINES
from generative_rec.evaluation.metrics import format_table, paired_significance
from generative_rec.io import atomic_write_json

MODELS = ("pop", "itemknn", "itemknn_classic", "bpr", "lightgcn", "sasrec", "content_knn", "mf_llm_init")
# Smaller grids for a quick check (--quick); the full ones are each model's ``grid``.
QUICK = {
    "itemknn": {"k": [50], "shrink": [10.0], "decay": [0.8]},
    "bpr": {"reg": [1e-4]},
    "lightgcn": {"layers": [2], "reg": [1e-4]},
    "sasrec": {"dropout": [0.2]},
    "content_knn": {"decay": [0.7], "last_n": [None]},
    "mf_llm_init": {"reg": [1e-4]},
}
COLUMNS = ["HR@10", "NDCG@10", "NDCG@20", "MRR@20", "Coverage@10", "Novelty@10", "PopBias@10", "ILD@10",
           "valid NDCG@10", "fit_s", "tune_s", "best params"]


def genre_embeddings(data: RecData) -> np.ndarray:
    """Multi-hot genre vectors ``[N, G]``: a stand-in for LLM item embeddings."""
    genres = sorted({g for attrs in data.attributes for g in attrs})
    col = {g: n for n, g in enumerate(genres)}
    e = np.zeros((data.num_items, len(genres)), dtype=np.float32)
    for i, attrs in enumerate(data.attributes):
        e[i, [col[g] for g in attrs]] = 1.0
    return e


def item_embeddings(data: RecData, source: str) -> tuple[np.ndarray, str]:
    """The matrix for the content models and its label: genres, llm, minilm or a .npy path."""
    if source == "genres":
        return genre_embeddings(data), "genres"
    if source in ("llm", "minilm"):
        from generative_rec.embeddings import embed_texts

        return embed_texts(data.texts, encoder=source, progress=False), source
    return np.load(source), Path(source).name


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/ml-100k")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--item-embeddings", default="genres", help="genres | llm | minilm | path to a .npy [N, d]")
    p.add_argument("--quick", action="store_true", help="one configuration per model (the defaults' region)")
    p.add_argument("--output", default="runs/bench/baselines_ml100k")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    data = RecData(args.data)
    emb, emb_name = item_embeddings(data, args.item_embeddings)

    table: dict[str, dict] = {}
    per_user: dict[str, np.ndarray] = {}
    records: dict[str, dict] = {}
    users = np.arange(data.num_users)
    for name in args.models.split(","):
        model_name = "itemknn" if name == "itemknn_classic" else name
        if model_name not in BASELINES:
            raise SystemExit(f"unknown model {name!r}")
        grid = QUICK.get(model_name) if args.quick else None
        if name == "itemknn_classic":  # the textbook item-kNN: unweighted history
            grid = {**(grid or BASELINES["itemknn"].grid), "decay": [1.0]}
        content = model_name in CONTENT_MODELS
        label = f"{name} [{emb_name}]" if content else name
        # the benchmark's own runner: tuned on validation NDCG@10, evaluated once on the test users
        tier = Tier("bench", "", grids={model_name: grid} if grid else {})
        rec, arrays = run_baseline(model_name, data, users, tier, args.seed, KS, emb if content else None)
        m, best_fit_s = rec["metrics"], next(t["fit_s"] for t in rec["trials"] if t["params"] == rec["params"])
        table[label] = {**{c: m[c] for c in COLUMNS[:8]}, "valid NDCG@10": rec["valid_NDCG@10"],
                        "fit_s": f"{best_fit_s:.1f}", "tune_s": f"{rec['tune_s']:.1f}",
                        "best params": ", ".join(f"{k}={v}" for k, v in rec["params"].items()) or "-"}
        per_user[label] = arrays["NDCG@10"]
        records[label] = {"params": rec["params"], "valid": rec["valid_NDCG@10"], "trials": rec["trials"],
                          "seed": args.seed, "fit_info": rec["fit_info"], "test": m}
        print(f"{label}: test HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f} "
              f"(valid {rec['valid_NDCG@10']:.4f}, {rec['params']}, tune {rec['tune_s']:.0f}s)", flush=True)

    best = max(per_user, key=lambda m: per_user[m].mean())
    sig = {}
    for m in per_user:
        if m != best:
            t = paired_significance(per_user[best], per_user[m])
            sig[m] = {"mean diff": f"{t.mean_diff:+.4f}", "t-test p": f"{t.t_pvalue:.2g}",
                      "Wilcoxon p": f"{t.wilcoxon_pvalue:.2g}"}
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    print(f"\n## Baselines on {data.name}: test split, {data.num_users} users, full ranking over "
          f"{data.num_items} items, history masked (tuned on validation NDCG@10)\n")
    print(format_table(table, COLUMNS))
    print(f"\nPaired tests on per-user NDCG@10, {best} against each other model:\n")
    print(format_table(sig))
    print(f"\nseed {args.seed}; torch threads {args.threads}; torch {torch.__version__}; {platform.processor() or platform.machine()}")
    print(f"command: {command}")

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "per_user_ndcg10.npz", users=np.arange(data.num_users), **per_user)
    report = {"command": command, "seed": args.seed, "threads": args.threads, "data": str(data.path),
              "embeddings": emb_name, "table": table, "significance": sig, "models": records}
    atomic_write_json(out / "results.json", report)
    return report


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f}s")
