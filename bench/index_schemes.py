"""Compare the item-ID schemes on a prepared data set (default: MovieLens-100K) with a real tokenizer.

    python bench/index_schemes.py                       # writes bench/results/index_schemes.md

Per scheme: build time (semantic: from cached item embeddings; the embedding time is reported apart),
new tokens, ID length in tokens (mean / max) with the SmolLM2 tokenizer (new tokens added, as modeling
does), trie depth, share of items whose first token is shared with another item, and two rough signals
of useful structure: the share of validation targets whose first token equals that of the user's last
training item, and the mean genre Jaccard of item pairs sharing a first token (all pairs in brackets).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS:
    os.environ.setdefault(_var, "1")  # on a shared 2-core machine threaded BLAS thrashes (SVD 0.1 s -> 18 s)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generative_rec.data.dataset import RecData  # noqa: E402
from generative_rec.embeddings import embed_texts  # noqa: E402
from generative_rec.indexing import SCHEMES, IndexConfig, build_index  # noqa: E402
from generative_rec.paths import genrec_home  # noqa: E402

VARIANTS = {  # label -> (scheme, options)
    "atomic": ("atomic", {}), "sequential": ("sequential", {}), "random": ("random", {}),
    "title": ("title", {}), "collaborative": ("collaborative", {}),
    "semantic (MiniLM)": ("semantic", {"encoder": "minilm"}),
    "semantic (SmolLM2 last layer)": ("semantic", {"encoder": "llm"}),
}


def genre_jaccard(data: RecData) -> np.ndarray:
    names = sorted({g for a in data.attributes for g in a})
    m = np.zeros((data.num_items, len(names)))
    for i, a in enumerate(data.attributes):
        m[i, [names.index(g) for g in a]] = 1
    inter = m @ m.T
    size = m.sum(1)
    return inter / np.maximum(size[:, None] + size[None, :] - inter, 1)


def main() -> None:
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "ml-100k"))
    ap.add_argument("--tokenizer", default=str(genrec_home() / "models" / "SmolLM2-135M-Instruct"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "index_schemes.md"))
    ap.add_argument("--time-embeddings", action="store_true", help="embed without the cache, to time it")
    args = ap.parse_args()
    data = RecData(args.data)
    jac = genre_jaccard(data)
    valid = data.examples("valid")
    embed_s = {}
    for enc in ("minilm", "llm"):
        t0 = time.perf_counter()
        embed_texts(list(data.texts), encoder=enc, progress=False, use_cache=not args.time_embeddings)
        embed_s[enc] = time.perf_counter() - t0
    rows = []
    for label, (scheme, opts) in VARIANTS.items():
        if scheme not in SCHEMES:
            continue
        index = build_index(data, IndexConfig(scheme=scheme, options=opts))
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        tok.add_tokens(index.new_tokens)
        seqs = index.token_ids(tok)
        trie = index.build_trie(tok)
        lens = np.array([len(s) for s in seqs])
        first = np.array([s[0] for s in seqs])
        _, inv, counts = np.unique(first, return_inverse=True, return_counts=True)
        same = first[:, None] == first[None, :]
        np.fill_diagonal(same, False)
        rows.append({
            "scheme": label, "build_s": index.meta["build_seconds"], "new": len(index.new_tokens),
            "mean": lens.mean(), "max": int(lens.max()), "depth": trie.max_depth,
            "shared": float((counts[inv] > 1).mean()), "firsts": len(counts),
            "next": float(np.mean([first[e.target] == first[e.history[-1]] for e in valid])),
            "genre": float(jac[same].mean()) if same.any() else float("nan"),
        })
        print(f"{label} done", file=sys.stderr)
    head = ("| scheme | build s | new tokens | ID tokens mean / max | trie depth | distinct first tokens "
            "| items sharing first token | next item shares first token | genre Jaccard, same first token |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['build_s']:.2f} | {r['new']} | {r['mean']:.2f} / {r['max']} "
                     f"| {r['depth']} | {r['firsts']} | {r['shared']:.1%} | {r['next']:.1%} | {r['genre']:.3f} |")
    md = "\n".join([
        f"# Item-ID schemes on {data.name}", "",
        f"- command: `python bench/index_schemes.py{' --time-embeddings' if args.time_embeddings else ''}`",
        f"- {data.num_items} items; tokenizer: SmolLM2-135M-Instruct (+ the scheme's new tokens)",
        f"- item-text embeddings ({'computed, one thread' if args.time_embeddings else 'read from the cache'}): "
        f"MiniLM {embed_s['minilm']:.1f} s, SmolLM2 {embed_s['llm']:.1f} s — not part of the semantic build time",
        f"- genre Jaccard of random item pairs: {jac[~np.eye(len(jac), dtype=bool)].mean():.3f}; "
        "'next item shares first token': validation target vs the last training item", "",
        *lines, "",
    ])
    print(md)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
