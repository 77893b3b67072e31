"""Benchmark the item trie: build time, memory and per-row lookup cost for 10k / 100k / 1M items.

    python bench/trie_bench.py                 # all sizes, writes bench/results/trie.md
    python bench/trie_bench.py --sizes 10000   # a quick run (still writes the table)

Catalogue: random distinct 4-token IDs shaped like semantic IDs (level ``l`` draws from its own 256 token
ids, offset into a 50k vocabulary). Each size runs in a fresh subprocess so peak-RSS numbers are its own;
the peak is reset right before the build (Linux ``/proc/self/clear_refs``), so it measures the build only.

Measured per row (median over random prefixes of random items, depth 0-3, single thread):
- ``step``: one decoding step as a decoder does it — ``child(node, token)`` then ``allowed(child)``;
- ``walk``: ``allowed_after(prefix)`` from the root (what a stateless logits processor does);
- ``mask np``: fill a preallocated float32 row of 50k with -inf and zero the allowed tokens;
- ``mask torch``: the same on a torch tensor (what an HF / vLLM logits processor does).
Targets (from the brief): build <= 5 s and <= 300 MB at 1M items, lookup <= 50 us per row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generative_rec.trie import Trie  # noqa: E402

VOCAB = 50_000
LEVELS, CODES, OFFSET = 4, 256, 1000
TARGETS = {"build_s": 5.0, "mb": 300.0, "lookup_us": 50.0}


def catalogue(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct rows of 4 token ids; level ``l`` uses ids ``OFFSET + l * CODES + [0, CODES)``."""
    rng = np.random.default_rng(seed)
    rows = np.empty((0, LEVELS), dtype=np.int64)
    while len(rows) < n:
        more = rng.integers(0, CODES, size=(n - len(rows) + 1000, LEVELS))
        rows = np.unique(np.concatenate([rows, more]), axis=0)
    rows = rows[rng.permutation(len(rows))[:n]]
    return rows + OFFSET + CODES * np.arange(LEVELS)


def rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def median_ns(fn, args: list, repeat: int = 3) -> float:
    """Median wall time of ``fn(*a)`` over ``args`` (each call timed on its own), best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        times = np.empty(len(args))
        for k, a in enumerate(args):
            t0 = time.perf_counter_ns()
            fn(*a)
            times[k] = time.perf_counter_ns() - t0
        best = min(best, float(np.median(times)))
    return best


def one(n: int, lookups: int) -> dict:
    """Measure one catalogue size (run in its own process)."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    ids = catalogue(n)
    as_lists = ids.tolist()
    rss0 = rss_mb("VmRSS")
    peak_reset = reset_peak()
    t0 = time.perf_counter()
    trie = Trie.build(as_lists)
    build_s = time.perf_counter() - t0
    peak = rss_mb("VmHWM")
    t0 = time.perf_counter()
    Trie.build(ids)
    build_arr_s = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    items = rng.integers(0, n, size=lookups)
    depths = rng.integers(0, LEVELS, size=lookups)
    prefixes = [as_lists[i][:d] for i, d in zip(items, depths, strict=True)]
    steps = []  # (parent node, token) pairs: the state a decoder holds
    for i, d in zip(items, depths, strict=True):
        seq = as_lists[i]
        steps.append((trie.walk(seq[:d]), seq[d]))
    allowed_rows = [trie.allowed(trie.child(p, t)) for p, t in steps]

    def step(node: int, tok: int) -> np.ndarray:
        return trie.allowed(trie.child(node, tok))

    buf = np.empty(VOCAB, dtype=np.float32)

    def mask_np(allowed: np.ndarray) -> None:
        buf.fill(-np.inf)
        buf[allowed] = 0.0

    out = {
        "items": n, "nodes": trie.num_nodes, "build_s": build_s, "build_array_s": build_arr_s,
        "nbytes_mb": trie.nbytes / 2**20, "peak_growth_mb": peak - rss0 if peak_reset else float("nan"),
        "step_us": median_ns(step, steps) / 1e3,
        "walk_us": median_ns(trie.allowed_after, [(p,) for p in prefixes]) / 1e3,
        "mask_np_us": median_ns(mask_np, [(a,) for a in allowed_rows]) / 1e3,
        "mean_allowed": float(np.mean([len(a) for a in allowed_rows])),
    }
    if torch is not None:
        tbuf = torch.empty(VOCAB)
        t_rows = [(torch.from_numpy(a.astype(np.int64)),) for a in allowed_rows]

        def mask_torch(allowed) -> None:
            tbuf.fill_(float("-inf"))
            tbuf[allowed] = 0.0

        out["mask_torch_us"] = median_ns(mask_torch, t_rows) / 1e3
    return out


def machine() -> str:
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in info.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {cores} cores"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(rows: list[dict]) -> str:
    head = ("| items | nodes | build (lists) s | build (array) s | Trie.nbytes MB | peak RSS growth MB "
            "| step µs | walk µs | mask np µs | mask torch µs | mean allowed |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['items']:,} | {r['nodes']:,} | {r['build_s']:.2f} | {r['build_array_s']:.2f} "
            f"| {r['nbytes_mb']:.1f} | {r['peak_growth_mb']:.0f} | {r['step_us']:.1f} | {r['walk_us']:.1f} "
            f"| {r['mask_np_us']:.1f} | {r.get('mask_torch_us', float('nan')):.1f} | {r['mean_allowed']:.1f} |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["items"] < 1_000_000:
            continue
        lookup = r["step_us"] + max(r["mask_np_us"], r.get("mask_torch_us", 0.0))
        out.append(f"- 1M items: build {r['build_s']:.2f} s (target ≤ {TARGETS['build_s']:.0f} s): "
                   f"{'met' if r['build_s'] <= TARGETS['build_s'] else 'MISSED'}; "
                   f"memory {r['nbytes_mb']:.0f} MB arrays / {r['peak_growth_mb']:.0f} MB peak growth "
                   f"(target ≤ {TARGETS['mb']:.0f} MB): "
                   f"{'met' if max(r['nbytes_mb'], r['peak_growth_mb']) <= TARGETS['mb'] else 'MISSED'}; "
                   f"step + mask row {lookup:.1f} µs (target ≤ {TARGETS['lookup_us']:.0f} µs): "
                   f"{'met' if lookup <= TARGETS['lookup_us'] else 'MISSED'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--lookups", type=int, default=5000, help="random prefixes per size")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trie.md"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.lookups)))
        return
    rows = []
    for n in args.sizes:
        res = subprocess.run([sys.executable, __file__, "--one", str(n), "--lookups", str(args.lookups)],
                             capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"{n:,} items done", file=sys.stderr)
    cmd = "python bench/trie_bench.py" + ("" if args.sizes == [10_000, 100_000, 1_000_000]
                                          else " --sizes " + " ".join(map(str, args.sizes)))
    md = "\n".join([
        "# Trie benchmark", "",
        f"- command: `{cmd}`",
        f"- machine: {machine()} (single-threaded measurements; the machine may be shared)",
        f"- commit: {commit()} (plus uncommitted work in progress)",
        f"- catalogue: random distinct {LEVELS}-token IDs, {CODES} codes per level, vocabulary {VOCAB:,}",
        "- step = `child` + `allowed` from a held node; walk = `allowed_after(prefix)` from the root; "
        "mask = fill a 50k float32 row with -inf and zero the allowed tokens (preallocated); medians over "
        f"{args.lookups} random prefixes (depth 0–3)", "",
        table(rows), "", *verdict(rows), "",
    ])
    print(md)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)


if __name__ == "__main__":
    main()
