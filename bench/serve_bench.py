"""Serving benchmark: constrained top-K against the unconstrained equal-work baseline on the same server.

For each bundle (one ID scheme each), on ONE ``genrec serve`` server and the same prompts:

1. ``POST /v1/recommendations`` (k, history excluded) from C concurrent clients, C in 1 / 8 / 32: rec/s,
   p50/p99 latency, engine requests per recommendation (from the response's ``decode`` block);
2. the unconstrained *equal-work* baseline through ``/v1/completions`` with the same prompt token ids:
   ``n=1, max_tokens=1`` for single-token IDs (one forward pass over the prompt), ``n=beams,
   max_tokens=depth`` (sampled, ``ignore_eos``) for multi-token IDs. It runs before AND after the
   constrained phase; the ratio uses their mean, so a machine whose load drifts biases neither side.
   ``ratio_vs_equal_work`` = constrained rec/s / baseline req/s.

Then, per bundle, offline batch generation (``genrec generate``'s code path, ``generative_rec.generate``)
against the KV-cached HF decoder ``genrec eval`` uses (``decoding.hf.hf_topk``) on the same users, side by side.

Then a fan-out sweep: synthetic atomic catalogues (1k / 10k / 100k items, tiny random model), one server
each: engine requests per recommendation and rec/s, beside the ``n=1, max_tokens=1`` baseline.

    python bench/serve_bench.py --bundle runs/serve-atomic runs/serve-sequential runs/serve-semantic \\
        --fanout 1000 10000 100000 --output bench/results/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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
        hist = [h for h in hist if h]
    except (OSError, KeyError, ValueError):
        hist = [[bundle.item_ids[i] for i in rng.choice(bundle.num_items, size=30, replace=False)] for _ in range(64)]
    return [hist[j % len(hist)] for j in range(n)]


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------- server
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
    while time.time() - t0 < 900:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(2)
    stop_server(proc)
    raise RuntimeError("server not ready")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def run_clients(base: str, path: str, bodies: list[dict], clients: int) -> dict:
    """``clients`` concurrent clients, each sending the next body as soon as its previous one returned."""
    import httpx

    todo = list(bodies)
    lat, outs = [], []

    async def client(c: httpx.AsyncClient):
        while todo:
            body = todo.pop(0)
            t = time.perf_counter()
            r = await c.post(base + path, json=body)
            if r.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.text[:500]}")
            lat.append(time.perf_counter() - t)
            outs.append(r.json())

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"requests": len(lat), "wall_s": round(wall, 3), "rps": len(lat) / wall, "p50": pct(lat, 50),
            "p99": pct(lat, 99), "outs": outs, "load": load()}


def rec_bodies(hists, k):
    return [{"history": h, "k": k} for h in hists]


def baseline_bodies(prompts, depth: int, beams: int):
    """The unconstrained equal-work request for one recommendation."""
    if depth == 1:
        return [{"model": "genrec", "prompt": p, "max_tokens": 1, "n": 1, "temperature": 1.0} for p in prompts]
    return [{"model": "genrec", "prompt": p, "max_tokens": depth, "n": beams, "temperature": 1.0, "ignore_eos": True}
            for p in prompts]


def measure_server(bundle, extra: list[str], concurrency: list[int], per_client: int, k: int, seed: int,
                   log: Path) -> dict:
    """Constrained vs equal-work baseline on one server, per client count."""
    from generative_rec.serving.request import prepare

    depth = bundle.trie.max_depth
    beams = k
    n_max = max(max(8, c * per_client) for c in concurrency)
    hists = workload(bundle, n_max + 8, seed)
    prompts = [prepare(bundle, h, k).prompt for h in hists]
    out = {"scheme": bundle.index.scheme, "bundle": str(bundle.path), "base_model": bundle.manifest.get("base_model"),
           "catalogue": bundle.num_items, "id_tokens": depth, "root_children": int(len(bundle.trie.allowed(0))),
           "k": k, "beams": beams, "prompt_tokens_mean": float(np.mean([len(p) for p in prompts])),
           "baseline": "n=1, max_tokens=1" if depth == 1 else f"n={beams}, max_tokens={depth}, ignore_eos",
           "levels": {}}
    t0 = time.time()
    proc, base = start_server(str(bundle.path), log, extra)
    out["server_start_s"] = round(time.time() - t0, 1)
    try:
        # warm-up: the first logprobs / sampling steps compile kernels (tens of seconds on CPU)
        asyncio.run(run_clients(base, "/v1/recommendations", rec_bodies(hists[:4], k), 2))
        asyncio.run(run_clients(base, "/v1/completions", baseline_bodies(prompts[:4], depth, beams), 2))
        for c in concurrency:
            n = max(8, c * per_client)
            h, p = hists[8: 8 + n], prompts[8: 8 + n]
            b1 = asyncio.run(run_clients(base, "/v1/completions", baseline_bodies(p, depth, beams), c))
            con = asyncio.run(run_clients(base, "/v1/recommendations", rec_bodies(h, k), c))
            b2 = asyncio.run(run_clients(base, "/v1/completions", baseline_bodies(p, depth, beams), c))
            infos = [o["decode"] for o in con.pop("outs")]
            b1.pop("outs")
            b2.pop("outs")
            base_rps = (b1["rps"] + b2["rps"]) / 2
            row = {"constrained": con, "baseline_before": b1, "baseline_after": b2, "baseline_rps": base_rps,
                   "ratio_vs_equal_work": con["rps"] / base_rps,
                   "engine_requests_per_rec": float(np.mean([i["engine_requests"] for i in infos])),
                   "engine_requests_per_rec_max": int(max(i["engine_requests"] for i in infos)),
                   "steps_per_rec": float(np.mean([i["steps"] for i in infos]))}
            out["levels"][c] = row
            print(f"{out['scheme']:10s} c={c:3d}: constrained {con['rps']:.2f} rec/s (p50 {con['p50']:.2f}s p99 "
                  f"{con['p99']:.2f}s), baseline {b1['rps']:.2f}/{b2['rps']:.2f} req/s, ratio "
                  f"{row['ratio_vs_equal_work']:.2f}, engine requests/rec {row['engine_requests_per_rec']:.1f}, "
                  f"load {con['load']}", flush=True)
    finally:
        stop_server(proc)
    return out


# --------------------------------------------------------------------------- batch generation vs HF
def measure_batch(bundle, n_users: int, k: int, seed: int, tmp: Path, hf_batch: int) -> dict:
    """``genrec generate`` (vLLM, offline) vs ``hf_topk`` (KV-cached HF, genrec eval's decoder), same users."""
    import torch
    from transformers import AutoModelForCausalLM

    from generative_rec.decoding.hf import hf_topk
    from generative_rec.decoding.vllm_engine import EngineOptions, close_llm, open_llm
    from generative_rec.generate import GenerateOptions, generate
    from generative_rec.serving.request import prepare

    hists = workload(bundle, n_users, seed + 1)
    inp = tmp / f"users-{bundle.index.scheme}.jsonl"
    inp.write_text("".join(json.dumps({"user_id": f"u{j}", "history": h}) + "\n" for j, h in enumerate(hists)))
    res = {"users": n_users, "k": k, "load_before": load(),
           "engine_reserved_cpus": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0 (open_llm's default)")}
    warm = tmp / f"warm-{bundle.index.scheme}.jsonl"
    warm.write_text("".join(json.dumps({"user_id": f"w{j}", "history": h}) + "\n" for j, h in enumerate(hists[:4])))
    llm = open_llm(bundle, EngineOptions(max_model_len=1024, kv_cache_gb=2))
    try:  # the first logprobs steps compile kernels: warm up, then time a second run on the same engine
        generate(GenerateOptions(bundle=str(bundle.path), input=str(warm), output=str(tmp / "warm.jsonl"), k=k,
                                 overwrite=True), llm=llm, progress=False)
        s = generate(GenerateOptions(bundle=str(bundle.path), input=str(inp), output=str(tmp / "out.jsonl"), k=k,
                                     overwrite=True), llm=llm, progress=False)
    finally:
        close_llm(llm)
        del llm
    res["vllm_generate"] = {"seconds": s["seconds"], "users_per_s": s["written"] / s["seconds"],
                            "engine_requests_per_user": s["decode"]["engine_requests"] / s["written"],
                            "load": load()}
    model = AutoModelForCausalLM.from_pretrained(bundle.model_dir, dtype=torch.float32).eval()
    ps = [prepare(bundle, h, k) for h in hists]
    with torch.inference_mode():
        hf_topk(model, [p.prompt for p in ps[:2]], bundle.trie, k, bundle.tokenizer.pad_token_id,
                exclude=[p.exclude for p in ps[:2]], batch_size=2)  # warm-up
        t0 = time.perf_counter()
        hf_topk(model, [p.prompt for p in ps], bundle.trie, k, bundle.tokenizer.pad_token_id,
                exclude=[p.exclude for p in ps], batch_size=hf_batch)
        sec = time.perf_counter() - t0
    res["hf_kv_cached"] = {"seconds": round(sec, 2), "users_per_s": n_users / sec, "batch_size": hf_batch,
                           "load": load()}
    res["speedup"] = res["vllm_generate"]["users_per_s"] / res["hf_kv_cached"]["users_per_s"]
    print(f"{bundle.index.scheme:10s} batch: genrec generate {res['vllm_generate']['users_per_s']:.2f} users/s, "
          f"HF KV-cached {res['hf_kv_cached']['users_per_s']:.2f} users/s ({res['speedup']:.2f}x)", flush=True)
    return res


# --------------------------------------------------------------------------- fan-out sweep
def synthetic_atomic_bundle(n_items: int, folder: Path) -> Path:
    """A tiny random model with ``n_items`` atomic IDs (each one new token), trained 2 steps."""
    import yaml

    from generative_rec.config import load_config
    from generative_rec.data.prepare import PrepareConfig, prepare
    from generative_rec.training import train

    if (folder / "bundle" / "bundle.json").exists():
        return folder / "bundle"
    rng = np.random.default_rng(n_items)
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with open(raw / "items.jsonl", "w") as f:
        for i in range(n_items):
            f.write(json.dumps({"item_id": f"i{i}", "title": f"Item {i}"}) + "\n")
    n_users = 64
    with open(raw / "inter.csv", "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(n_users):
            for pos, i in enumerate(rng.choice(n_items, size=30, replace=False)):
                f.write(f"u{u},i{i},{1000 * u + pos}\n")
        for i in range(n_items):  # every item interacted with once, at the end of someone's history
            f.write(f"u{i % n_users},i{i},{10**9 + i}\n")
    data = prepare(PrepareConfig(source="table", output=str(folder / "data"),
                                 table={"path": str(raw / "inter.csv"), "items_path": str(raw / "items.jsonl")}))
    cfg = {"data": {"path": str(data)}, "index": {"scheme": "atomic"},
           "model": {"base": "tiny-random", "tiny": {"hidden": 64, "layers": 2, "heads": 2, "vocab": 400}},
           "lora": {"r": 4, "alpha": 8}, "prompts": {"tasks": {"next_item": 1.0}},
           "train": {"max_steps": 2, "batch_size": 4, "save_every": 0, "eval_users": 2},
           "output": str(folder / "bundle")}
    (folder / "run.yaml").write_text(yaml.safe_dump(cfg))
    return Path(train(load_config(folder / "run.yaml"), overwrite=True))


def measure_fanout(n_items: int, work: Path, clients: int, per_client: int, k: int, seed: int, extra: list[str]) -> dict:
    from generative_rec.bundle import Bundle
    from generative_rec.serving.request import prepare

    t0 = time.time()
    bundle = Bundle(synthetic_atomic_bundle(n_items, work / f"atomic-{n_items}"))
    built = round(time.time() - t0, 1)
    n = max(8, clients * per_client)
    hists = [h[-50:] for h in workload(bundle, n + 8, seed)]  # the prompt shows the last 20 anyway
    prompts = [prepare(bundle, h, k).prompt for h in hists]
    proc, base = start_server(str(bundle.path), work / f"server-{n_items}.log", extra)
    try:
        asyncio.run(run_clients(base, "/v1/recommendations", rec_bodies(hists[:4], k), 2))
        asyncio.run(run_clients(base, "/v1/completions", baseline_bodies(prompts[:4], 1, 1), 2))
        b1 = asyncio.run(run_clients(base, "/v1/completions", baseline_bodies(prompts[8:], 1, 1), clients))
        con = asyncio.run(run_clients(base, "/v1/recommendations", rec_bodies(hists[8:], k), clients))
        b2 = asyncio.run(run_clients(base, "/v1/completions", baseline_bodies(prompts[8:], 1, 1), clients))
    finally:
        stop_server(proc)
    infos = [o["decode"] for o in con.pop("outs")]
    b1.pop("outs")
    b2.pop("outs")
    row = {"items": n_items, "root_children": int(len(bundle.trie.allowed(0))), "clients": clients, "k": k,
           "bundle_build_s": built, "constrained": con, "baseline_rps": (b1["rps"] + b2["rps"]) / 2,
           "engine_requests_per_rec": float(np.mean([i["engine_requests"] for i in infos])),
           "logprob_token_ids_requests_per_rec": math.ceil(n_items / 128),  # what the previous path needed
           "prompt_tokens_mean": float(np.mean([len(p) for p in prompts]))}
    row["ratio_vs_equal_work"] = con["rps"] / row["baseline_rps"]
    print(f"fan-out {n_items:7d}: {con['rps']:.2f} rec/s, baseline {row['baseline_rps']:.2f} req/s, "
          f"engine requests/rec {row['engine_requests_per_rec']:.1f} (logprob_token_ids path: "
          f"{row['logprob_token_ids_requests_per_rec']})", flush=True)
    return row


# --------------------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", nargs="*", default=[], help="one bundle per ID scheme")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests-per-client", type=int, default=3, help="requests per client (min 8 per phase)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-users", type=int, default=64, help="users for batch generation vs HF (0: skip)")
    ap.add_argument("--hf-batch-size", type=int, default=16, help="hf_topk batch size (genrec eval's default)")
    ap.add_argument("--fanout", type=int, nargs="*", default=[], help="synthetic atomic catalogue sizes")
    ap.add_argument("--fanout-clients", type=int, default=32)
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "genrec-serve-bench"))
    ap.add_argument("--output", help="Markdown file to write (JSON beside it)")
    ap.add_argument("server_args", nargs=argparse.REMAINDER, help="-- then extra genrec serve flags")
    a = ap.parse_args()
    extra = a.server_args[1:] if a.server_args[:1] == ["--"] else a.server_args
    extra = extra or ["--kv-cache-gb", "2"]

    from generative_rec.bundle import Bundle
    from generative_rec.evaluation.run import git_commit, machine

    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine(), "commit": git_commit(), "load_before": os.getloadavg(),
                 "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                 "server_flags": extra, "schemes": [], "batch": {}, "fanout": []}
    print(f"machine: {res['machine']}; load {res['load_before']}; work dir {work}", flush=True)
    out_path = Path(a.output) if a.output else None

    def save():
        if out_path is None:
            return
        res["load_after"] = os.getloadavg()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(render(res))
        out_path.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")

    for path in a.bundle:
        b = Bundle(path)
        res["schemes"].append(measure_server(b, extra, a.concurrency, a.requests_per_client, a.k, a.seed,
                                             work / f"server-{b.index.scheme}.log"))
        save()
        if a.batch_users:
            res["batch"][b.index.scheme] = measure_batch(b, a.batch_users, a.k, a.seed, work, a.hf_batch_size)
            save()
    for n in a.fanout:
        res["fanout"].append(measure_fanout(n, work, a.fanout_clients, a.requests_per_client, a.k, a.seed, extra))
        save()
    text = render(res)
    print(text)
    save()


def render(res: dict) -> str:
    la = res.get("load_after", ())
    lines = ["# Serving benchmark: constrained top-K vs the unconstrained equal-work baseline (same server)", "",
             f"- Command: `{res['command']}`",
             f"- Machine: {res['machine']}; load average before {tuple(round(x, 2) for x in res['load_before'])}, "
             f"after {tuple(round(x, 2) for x in la)}; per-phase 1-minute load in the tables (this machine is "
             "shared; absolute numbers move with its load, so compare the ratios: both sides run back to back "
             "on the same server).",
             f"- Commit: {res['commit']}",
             f"- Server: `genrec serve` defaults (fp32, prefix caching with 32-token blocks, "
             f"`--logprobs-mode processed_logprobs`) plus `{' '.join(res['server_flags'])}`", ""]
    if res["schemes"]:
        lines += ["## Per ID scheme (SmolLM2-135M bundles, MovieLens-100K histories, k = beams = 10, history excluded)",
                  "",
                  "Baseline = the unconstrained request doing the same engine work on the same prompt: `n=1, "
                  "max_tokens=1` for single-token IDs, `n=beams, max_tokens=depth` (sampled, `ignore_eos`) for "
                  "multi-token IDs; run before and after the constrained phase, ratio against their mean.", "",
                  "| scheme | ID tokens | catalogue (root children) | clients | constrained rec/s | p50 s | p99 s | "
                  "baseline req/s (before / after) | ratio_vs_equal_work | engine requests / rec (max) | load |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in res["schemes"]:
            for c, r in s["levels"].items():
                con = r["constrained"]
                lines.append(
                    f"| {s['scheme']} | {s['id_tokens']} | {s['catalogue']} ({s['root_children']}) | {c} | "
                    f"{con['rps']:.2f} | {con['p50']:.2f} | {con['p99']:.2f} | {r['baseline_rps']:.2f} "
                    f"({r['baseline_before']['rps']:.2f} / {r['baseline_after']['rps']:.2f}) | "
                    f"**{r['ratio_vs_equal_work']:.2f}** | {r['engine_requests_per_rec']:.1f} "
                    f"({r['engine_requests_per_rec_max']}) | {con['load']} |")
        lines += ["", "Mean prompt length: " + ", ".join(f"{s['scheme']} {s['prompt_tokens_mean']:.0f} tokens"
                                                           for s in res["schemes"]) + "; server start: " +
                  ", ".join(f"{s['scheme']} {s['server_start_s']} s" for s in res["schemes"]) + ".", ""]
    if res["batch"]:
        lines += ["## Batch generation: `genrec generate` (vLLM) vs the KV-cached HF decoder (`genrec eval`'s)", "",
                  "| scheme | users | genrec generate users/s | engine requests / user | HF `hf_topk` users/s "
                  "(batch) | speed-up | load (generate / HF) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for sch, r in res["batch"].items():
            v, h = r["vllm_generate"], r["hf_kv_cached"]
            lines.append(f"| {sch} | {r['users']} | {v['users_per_s']:.2f} | {v['engine_requests_per_user']:.1f} | "
                         f"{h['users_per_s']:.2f} ({h['batch_size']}) | **{r['speedup']:.2f}x** | "
                         f"{v['load']} / {h['load']} |")
        lines.append("")
    if res["fanout"]:
        lines += ["## Fan-out sweep: synthetic atomic catalogues, tiny random model (hidden 64, 2 layers)", "",
                  "| items (root children) | clients | engine requests / rec | the `logprob_token_ids` path's | "
                  "constrained rec/s | baseline `n=1,max_tokens=1` req/s | ratio | p50 s | p99 s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["fanout"]:
            con = r["constrained"]
            lines.append(f"| {r['items']} ({r['root_children']}) | {r['clients']} | {r['engine_requests_per_rec']:.1f} | "
                         f"{r['logprob_token_ids_requests_per_rec']} | {con['rps']:.2f} | {r['baseline_rps']:.2f} | "
                         f"{r['ratio_vs_equal_work']:.2f} | {con['p50']:.2f} | {con['p99']:.2f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
