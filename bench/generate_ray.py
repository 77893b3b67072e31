"""Users/s of `genrec generate --engine ray --workers N` against the single engine, on the same input.

    python bench/generate_ray.py                                   # SmolLM2 bundle of the CPU benchmark
    python bench/generate_ray.py --bundle runs/demo --users 240 --workers 2 --shard-users 30

Both runs are the real CLI in a subprocess, timed from start to exit (engine starts included: that is what
a nightly job pays) and by the command's own decode time. The Ray run's records must equal the single
engine's (checked; the script fails otherwise). Input: the first ``--users`` users of the bundle's data with
their test-split history. Results: bench/results/generate_ray.{md,json} with machine, load and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(cmd: list[str], log: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return wall, p.stdout


def records(path: Path) -> dict:
    files = sorted(f for f in path.iterdir() if not f.name.startswith(("_", "."))) if path.is_dir() else [path]
    out = {}
    for f in files:
        for line in f.read_text().splitlines():
            r = json.loads(line)
            assert r["user_id"] not in out, r["user_id"]
            out[r["user_id"]] = r
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=str(ROOT / "runs/benchmark-cpu/llm-bundle"))
    p.add_argument("--users", type=int, default=240)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shard-users", dest="shard_users", type=int, default=30)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "bench/results/generate_ray"))
    a = p.parse_args()

    from generative_rec.bundle import Bundle
    from generative_rec.data import RecData
    from generative_rec.evaluation.run import machine

    b = Bundle(a.bundle)
    data_path = Path(b.manifest["data"]["path"])
    d = RecData(data_path if data_path.is_absolute() else ROOT / data_path)
    tmp = Path(tempfile.mkdtemp(prefix="genrec-bench-ray-"))
    inp = tmp / "users.jsonl"
    n = min(a.users, d.num_users)
    inp.write_text("".join(json.dumps({"user_id": d.user_ids[u], "history": [d.item_ids[i] for i in d.history(u, "test")]})
                           + "\n" for u in range(n)))
    base = [sys.executable, "-m", "generative_rec.cli", "generate", "--bundle", a.bundle, "--input", str(inp),
            "--k", str(a.k)]
    load = os.getloadavg()
    single_wall, single_out = run(base + ["--output", str(tmp / "single.jsonl")], tmp / "single.log")
    ray_wall, ray_out = run(base + ["--output", str(tmp / "ray"), "--engine", "ray", "--workers", str(a.workers),
                                    "--shard-users", str(a.shard_users)], tmp / "ray.log")
    load_after = os.getloadavg()
    single, ray = records(tmp / "single.jsonl"), records(tmp / "ray")
    same = single == ray
    s_dec = float(re.search(r"in ([\d.]+) s \(", single_out).group(1))
    r_sum = re.search(r"in ([\d.]+) s \(", ray_out.splitlines()[-1])
    manifest = [json.loads(x) for x in (tmp / "ray" / "_manifest.jsonl").read_text().splitlines()]
    engine_s = sorted({m["worker"]: m["engine_s"] for m in manifest}.values())
    shard_s = sum(m["seconds"] for m in manifest)
    rows = [
        {"engine": "single (local)", "workers": 1, "users": n, "wall_s": round(single_wall, 1),
         "users_per_s_wall": round(n / single_wall, 2), "decode_s": s_dec, "users_per_s_decode": round(n / s_dec, 2)},
        {"engine": "ray", "workers": a.workers, "users": n, "wall_s": round(ray_wall, 1),
         "users_per_s_wall": round(n / ray_wall, 2), "decode_s": round(shard_s, 2),
         "users_per_s_decode": round(n / (shard_s / a.workers), 2), "engine_start_s": engine_s,
         "job_s": float(r_sum.group(1)) if r_sum else None},
    ]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    res = {"bundle": a.bundle, "scheme": b.manifest.get("scheme"), "base_model": b.manifest.get("base_model"),
           "k": a.k, "shard_users": a.shard_users, "records_equal": same, "rows": rows, "machine": machine(),
           "load_average_before": [round(x, 2) for x in load], "load_average_after": [round(x, 2) for x in load_after],
           "commit": head, "date": time.strftime("%Y-%m-%d %H:%M"),
           "command": "python bench/generate_ray.py " + " ".join(sys.argv[1:])}
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        "# `genrec generate --engine ray` vs the single engine",
        "",
        f"{b.manifest.get('base_model')} bundle ({b.manifest.get('scheme')} IDs), {n} users of "
        f"{b.manifest['data'].get('name')}, k={a.k}; Ray: {a.workers} CPU actors (1 CPU, 1 OpenMP thread each), "
        f"{a.shard_users}-user shards. Records equal to the single engine's: **{same}**.",
        "",
        "| engine | workers | users | wall s (all in) | users/s (all in) | decode s | users/s (decode) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['workers']} | {r['users']} | {r['wall_s']} | {r['users_per_s_wall']} | "
                     f"{r['decode_s']} | {r['users_per_s_decode']} |")
    lines += [
        "",
        "*wall s*: the CLI from start to exit (Python start, Ray start, input check, engine starts, decode, "
        "shutdown). *decode s*: single — the command's own decode time; Ray — the sum of the actors' per-shard "
        f"times, users/s (decode) = users / (that sum / workers). Ray actors' engine starts: {engine_s} s.",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']}; load average {res['load_average_before']} before, "
        f"{res['load_average_after']} after (other jobs shared the cores when it is above ~0.5)  ",
        f"Commit: {head}; {res['date']}",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    if not same:
        raise SystemExit("the Ray run's records differ from the single engine's")


if __name__ == "__main__":
    main()
