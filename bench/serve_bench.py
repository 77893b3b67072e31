"""Serving benchmark: recommendations/s and p50/p99 latency at 1, 8 and 32 concurrent clients.

Runs, on the same machine in one go:

1. ``genrec serve`` (vLLM, the real HTTP server in a subprocess) with C concurrent HTTP clients, each
   sending ``POST /v1/recommendations`` (k=10, history excluded) one after another;
2. the same requests through the HF reference decoder (``hf_generate_topk``: ``model.generate`` beam
   search with the trie logits processor) behind a one-at-a-time worker, with C client threads;
3. optionally (``--hf-batched``) the KV-cached HF decoder (``hf_topk``) batching whatever is queued.

It also reports where the server's decode time goes (engine vs trie work: planning the scoring requests,
masking and beam selection — from the per-request ``decode`` block of the response) and the cost of the
completions logits processor per engine step.

    python bench/serve_bench.py --bundle BUNDLE --output bench/results/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------- workload
def workload(bundle, n: int, seed: int) -> list[list[str]]:
    """``n`` histories (item ids): users' test-split histories from the bundle's data, else random."""
    from generative_rec.data import RecData

    rng = np.random.default_rng(seed)
    try:
        d = RecData(bundle.manifest["data"]["path"])
        users = rng.permutation(d.num_users)
        hist = [[d.item_ids[i] for i in d.history(int(u), "test")] for u in users]
    except (OSError, KeyError, ValueError):
        hist = [[bundle.item_ids[i] for i in rng.choice(bundle.num_items, size=30, replace=False)] for _ in range(64)]
    return [hist[j % len(hist)] for j in range(n)]


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


# --------------------------------------------------------------------------- vLLM server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle_path: str, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "generative_rec.cli", "serve", "--bundle", bundle_path, "--port", str(port),
           "--max-model-len", "1024", *extra]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 600:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise RuntimeError("server not ready")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def run_clients(base: str, histories: list[list[str]], clients: int, k: int) -> dict:
    import httpx

    q: asyncio.Queue = asyncio.Queue()
    for h in histories:
        q.put_nowait(h)
    lat, infos = [], []

    async def client(c: httpx.AsyncClient):
        while not q.empty():
            h = q.get_nowait()
            t = time.perf_counter()
            r = await c.post(base + "/v1/recommendations", json={"history": h, "k": k})
            r.raise_for_status()
            lat.append(time.perf_counter() - t)
            infos.append(r.json()["decode"])

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=900, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    trie = sum(i["trie_seconds"] for i in infos)
    return {"requests": len(lat), "wall_s": wall, "rps": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99),
            "trie_share_of_decode": trie / sum(i["seconds"] for i in infos), "trie_share_of_wall": trie / wall,
            "engine_requests_per_rec": float(np.mean([i["engine_requests"] for i in infos]))}


# --------------------------------------------------------------------------- HF reference
def run_hf(decode_one, decode_batch, histories_prepared, clients: int) -> dict:
    """C client threads; one worker decodes (one request at a time, or whatever is queued as a batch)."""
    jobs: queue.Queue = queue.Queue()
    lat: list[float] = []
    lock = threading.Lock()

    def worker():
        while True:
            first = jobs.get()
            if first is None:
                return
            batch = [first]
            if decode_batch is not None:
                while len(batch) < clients:
                    try:
                        nxt = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        jobs.put(None)
                        break
                    batch.append(nxt)
            if decode_batch is None:
                decode_one(first[0])
            else:
                decode_batch([b[0] for b in batch])
            for b in batch:
                b[1].set()

    work = list(histories_prepared)
    work_lock = threading.Lock()

    def client():
        while True:
            with work_lock:
                if not work:
                    return
                p = work.pop(0)
            done = threading.Event()
            t = time.perf_counter()
            jobs.put((p, done))
            done.wait()
            with lock:
                lat.append(time.perf_counter() - t)

    w = threading.Thread(target=worker, daemon=True)
    w.start()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    jobs.put(None)
    w.join()
    return {"requests": len(lat), "wall_s": wall, "rps": len(lat) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99)}


# --------------------------------------------------------------------------- processor cost
def processor_cost(bundle, rows: int = 256, reps: int = 5) -> float:
    """Seconds per ``apply()`` of the completions logits processor over ``rows`` constrained rows."""
    import torch

    from generative_rec.decoding.vllm_processor import TrieLogitsProcessor, _Row, load_spec

    proc = TrieLogitsProcessor.__new__(TrieLogitsProcessor)
    proc.spec = load_spec(str(bundle.path))
    rng = np.random.default_rng(0)
    proc.rows = {}
    for r in range(rows):
        seq = bundle.trie.sequence(int(rng.integers(bundle.num_items)))
        proc.rows[r] = _Row(seq[: int(rng.integers(len(seq)))], None)
    vocab = len(bundle.tokenizer)
    batches = [torch.randn(rows, vocab) for _ in range(reps + 1)]
    proc.apply(batches[0])
    t0 = time.perf_counter()
    for x in batches[1:]:
        proc.apply(x)
    return (time.perf_counter() - t0) / reps


# --------------------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests-per-client", type=int, default=3, help="vLLM requests per client (min 8 total)")
    ap.add_argument("--hf-requests-per-client", type=int, default=1, help="HF requests per client (min 2 total)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--hf-batched", action="store_true", help="also the KV-cached HF decoder with batching")
    ap.add_argument("--output", help="Markdown file to write (JSON beside it)")
    ap.add_argument("--server-log", help="where the server's log goes (default: a temporary folder)")
    ap.add_argument("server_args", nargs=argparse.REMAINDER, help="-- then extra genrec serve flags")
    a = ap.parse_args()
    extra = a.server_args[1:] if a.server_args[:1] == ["--"] else a.server_args

    from generative_rec.bundle import Bundle
    from generative_rec.evaluation.run import git_commit, machine
    from generative_rec.serving import prepare

    bundle = Bundle(a.bundle)
    n_max = max(max(8, c * a.requests_per_client) for c in a.concurrency)
    hists = workload(bundle, n_max + 8, a.seed)
    res: dict = {"machine": machine(), "commit": git_commit(), "bundle": str(bundle.path),
                 "base_model": bundle.manifest.get("base_model"), "scheme": bundle.index.scheme, "k": a.k,
                 "catalogue": bundle.num_items, "id_tokens": bundle.trie.max_depth,
                 "load_before": os.getloadavg(), "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                 "vllm": {}, "hf": {}, "hf_batched": {}}
    print(f"machine: {res['machine']}; load {res['load_before']}", flush=True)

    log = Path(a.server_log) if a.server_log else Path(tempfile.mkdtemp(prefix="serve-bench-")) / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"server log: {log}", flush=True)
    one = batch = None
    if not a.skip_hf:
        import torch
        from transformers import AutoModelForCausalLM

        from generative_rec.decoding.hf import hf_generate_topk, hf_topk

        model = AutoModelForCausalLM.from_pretrained(bundle.model_dir, dtype=torch.float32).eval()
        eos, pad = bundle.tokenizer.eos_token_id, bundle.tokenizer.pad_token_id
        prepared = [prepare(bundle, h, a.k) for h in hists]

        def one(p):
            with torch.inference_mode():
                return hf_generate_topk(model, p.prompt, bundle.trie, a.k, eos, exclude=p.exclude)

        def batch(ps):
            with torch.inference_mode():
                return hf_topk(model, [p.prompt for p in ps], bundle.trie, a.k, pad,
                               exclude=[p.exclude for p in ps], batch_size=len(ps))

        one(prepared[0])  # warm-up
    t0 = time.time()
    proc, base = start_server(str(bundle.path), log, extra)
    res["server_start_s"] = round(time.time() - t0, 1)
    try:
        asyncio.run(run_clients(base, hists[:4], 2, a.k))  # warm-up
        # Each concurrency level runs vLLM and then HF back to back, so both see about the same machine load
        # (the machine is shared); the idle server keeps its engine but uses no CPU meanwhile.
        for c in a.concurrency:
            n = max(8, c * a.requests_per_client)
            r = asyncio.run(run_clients(base, hists[8: 8 + n], c, a.k))
            res["vllm"][c] = {**r, "load": os.getloadavg()[0]}
            print(f"vLLM  c={c:3d}: {r['rps']:.2f} rec/s p50 {r['p50']:.2f}s p99 {r['p99']:.2f}s "
                  f"(trie {100 * r['trie_share_of_decode']:.1f}% of decode)", flush=True)
            if one is None:
                continue
            r = run_hf(one, None, prepared[8: 8 + max(2, c * a.hf_requests_per_client)], c)
            res["hf"][c] = {**r, "load": os.getloadavg()[0]}
            print(f"HF    c={c:3d}: {r['rps']:.2f} rec/s p50 {r['p50']:.2f}s p99 {r['p99']:.2f}s", flush=True)
            if a.hf_batched:
                r = run_hf(None, batch, prepared[8: 8 + n], c)
                res["hf_batched"][c] = {**r, "load": os.getloadavg()[0]}
                print(f"HF-KV c={c:3d}: {r['rps']:.2f} rec/s p50 {r['p50']:.2f}s p99 {r['p99']:.2f}s", flush=True)
    finally:
        stop_server(proc)
    res["processor_apply_s_256_rows"] = processor_cost(bundle)
    res["load_after"] = os.getloadavg()
    text = render(res)
    print(text)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(text)
        Path(a.output).with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")


def render(res: dict) -> str:
    lines = ["# Serving benchmark: `POST /v1/recommendations` (vLLM) vs the HF reference decoder", "",
             f"- Command: `{res['command']}`",
             f"- Machine: {res['machine']}; load average before {tuple(round(x, 2) for x in res['load_before'])}, "
             f"after {tuple(round(x, 2) for x in res.get('load_after', ()))} (shared machine)",
             f"- Commit: {res['commit']}",
             f"- Bundle: {res['bundle']} — base `{res['base_model']}`, `{res['scheme']}` IDs "
             f"({res['id_tokens']} tokens deep), {res['catalogue']} items; k={res['k']}, beams=k, history excluded, fp32",
             f"- vLLM server start: {res.get('server_start_s')} s", "",
             "| clients | vLLM rec/s | vLLM p50 s | vLLM p99 s | HF ref rec/s | HF ref p50 s | HF ref p99 s | speed-up |"
             " load (1 min) vLLM / HF |" + (" HF KV-cached batched rec/s |" if res["hf_batched"] else ""),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if res["hf_batched"] else "")]
    for c, v in res["vllm"].items():
        h = res["hf"].get(c, {})
        row = (f"| {c} | {v['rps']:.2f} | {v['p50']:.2f} | {v['p99']:.2f} | "
               f"{h.get('rps', float('nan')):.2f} | {h.get('p50', float('nan')):.2f} | {h.get('p99', float('nan')):.2f} | "
               f"{v['rps'] / h['rps'] if h else float('nan'):.1f}x | {v.get('load', 0):.1f} / {h.get('load', 0):.1f} |")
        if res["hf_batched"]:
            row += f" {res['hf_batched'].get(c, {}).get('rps', float('nan')):.2f} |"
        lines.append(row)
    lines += ["", "Where the server's decode time goes (trie work = planning scoring requests, scattering their "
              "log-probs, candidate masking and beam selection; the rest is the engine):", "",
              "| clients | requests | engine requests / rec | trie work / decode time | trie work / wall time |",
              "|---:|---:|---:|---:|---:|"]
    for c, v in res["vllm"].items():
        lines.append(f"| {c} | {v['requests']} | {v['engine_requests_per_rec']:.1f} | "
                     f"{100 * v['trie_share_of_decode']:.2f} % | {100 * v['trie_share_of_wall']:.2f} % |")
    lines += ["", f"Completions logits processor (constrained `/v1/completions` only): "
              f"{1000 * res['processor_apply_s_256_rows']:.1f} ms per engine step for 256 constrained rows.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
