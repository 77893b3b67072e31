"""Block-aligned prompts (``prompts.align``): ``genrec generate`` vs the KV-cached HF decoder, and the quality cost.

Per ID scheme (multi-token IDs: sequential, semantic), on MovieLens-100K with SmolLM2-135M:

1. train a bundle with ``prompts.align: 32`` (vLLM's CPU KV block) and one without, at the same budget:
   ``train/configs/demo_cpu.yaml`` with the scheme, no collaborative start (as for every non-atomic run),
   ``prompts.max_history: 20`` (the serving benchmark's prompt lengths) and ``train.max_steps: --steps``;
2. speed, on ONE engine over the aligned bundle's weights: ``genrec generate``'s code path
   (``generative_rec.generate``) with the aligned prompts and with the same histories' unaligned prompts
   (a view of the same bundle whose manifest says ``prompt_align: 0``), then ``hf_topk`` (KV-cached HF,
   ``genrec eval``'s decoder) on both prompt sets; ``--reps`` rounds each, alternating the order; medians;
3. quality: NDCG@10 / HR@10 of both bundles on the same seeded test users (HF decoder, history masked).

Everything is written to ``--work`` (bundles, logs, ``state.json``); a rerun skips finished phases.

    python bench/prompt_align.py --steps 30 --output bench/results/prompt_align.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import load, workload  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
ALIGN = 32


def train_command(scheme: str, align: int, steps: int, out: Path, config: str, extra: list[str]) -> list[str]:
    sets = [f"index.scheme={scheme}", "model.collaborative.source=null", "model.collaborative.distill=0",
            "prompts.max_history=20", f"prompts.align={align}", f"train.max_steps={steps}", "train.save_every=0",
            "train.eval_users=16", f"output={out}", *extra]
    return [sys.executable, "-m", "generative_rec", "train", "--config", config,
            "--overwrite", *[x for s in sets for x in ("--set", s)]]


def train(scheme: str, align: int, steps: int, work: Path, state: dict, config: str, extra: list[str]) -> Path:
    out = work / f"{scheme}-a{align}"
    key = f"train/{scheme}/{align}"
    if (out / "bundle.json").exists() and key in state:
        return out
    cmd = train_command(scheme, align, steps, out, config, extra)
    print(f"[{time.strftime('%H:%M:%S')}] train {scheme} align={align}: {' '.join(cmd[1:])}", flush=True)
    t0, load0 = time.time(), load()
    with open(work / f"train-{scheme}-a{align}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    m = json.loads((out / "metrics.json").read_text())["train"]
    state[key] = {"seconds": round(time.time() - t0, 1), "load_before": load0, "load_after": load(),
                  "steps": m["steps"], "tokens": m["tokens"], "final_loss": m["final_loss"],
                  "command": " ".join(["python", *cmd[1:]])}
    return out


def unaligned_view(bundle: Path, view: Path) -> Path:
    """The same bundle files with ``prompt_align: 0`` in the manifest (same weights, index and trie)."""
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    for f in bundle.iterdir():
        if f.name != "bundle.json":
            (view / f.name).symlink_to(f.resolve())
    m = json.loads((bundle / "bundle.json").read_text())
    m.update(prompt_align=0, prompt_filler=None)
    (view / "bundle.json").write_text(json.dumps(m, indent=2))
    return view


def speed(aligned: Path, n_users: int, reps: int, k: int, seed: int, hf_batch: int, work: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from generative_rec.bundle import Bundle
    from generative_rec.decoding.hf import hf_topk
    from generative_rec.decoding.vllm_engine import EngineOptions, close_llm, open_llm
    from generative_rec.generate import GenerateOptions, generate
    from generative_rec.serving.request import prepare

    views = {ALIGN: aligned, 0: unaligned_view(aligned, work / f"{aligned.name}-view-a0")}
    b = Bundle(aligned)
    hists = workload(b, n_users, seed + 1)
    inp = work / f"users-{b.index.scheme}.jsonl"
    inp.write_text("".join(json.dumps({"user_id": f"u{j}", "history": h}) + "\n" for j, h in enumerate(hists)))
    warm = work / f"warm-{b.index.scheme}.jsonl"
    warm.write_text("".join(json.dumps({"user_id": f"w{j}", "history": h}) + "\n" for j, h in enumerate(hists[:4])))
    prompts = {a: [prepare(Bundle(p), h, k) for h in hists] for a, p in views.items()}
    res: dict = {"users": n_users, "k": k, "reps": reps, "hf_batch": hf_batch,
                 "prompt_tokens_mean": {a: float(np.mean([len(p.prompt) for p in ps])) for a, ps in prompts.items()},
                 "partial_block_tokens_mean": {a: float(np.mean([len(p.prompt) % 32 for p in ps]))
                                               for a, ps in prompts.items()},
                 "generate": {0: [], ALIGN: []}, "hf": {0: [], ALIGN: []}}
    llm = open_llm(b, EngineOptions(max_model_len=1024, kv_cache_gb=2))
    try:
        for p in views.values():  # the first logprobs steps compile kernels
            generate(GenerateOptions(bundle=str(p), input=str(warm), output=str(work / "warm-out.jsonl"), k=k,
                                     overwrite=True), llm=llm, progress=False)
        for r in range(reps):
            for a in ([ALIGN, 0] if r % 2 == 0 else [0, ALIGN]):
                s = generate(GenerateOptions(bundle=str(views[a]), input=str(inp), output=str(work / f"out-{a}.jsonl"),
                                             k=k, overwrite=True), llm=llm, progress=False)
                row = {"seconds": s["seconds"], "users_per_s": s["written"] / s["seconds"],
                       "engine_requests_per_user": s["decode"]["engine_requests"] / s["written"], "load": load()}
                res["generate"][a].append(row)
                print(f"  generate align={a}: {row['users_per_s']:.2f} users/s, "
                      f"{row['engine_requests_per_user']:.1f} requests/user, load {row['load']}", flush=True)
    finally:
        close_llm(llm)
        del llm
    outs = {a: [json.loads(x) for x in (work / f"out-{a}.jsonl").read_text().splitlines()] for a in views}
    res["same_top10_share"] = float(np.mean([[i["item_id"] for i in x["items"]] == [i["item_id"] for i in y["items"]]
                                             for x, y in zip(outs[0], outs[ALIGN], strict=True)]))
    model = AutoModelForCausalLM.from_pretrained(aligned / "model", dtype=torch.float32).eval()
    pad = b.tokenizer.pad_token_id
    with torch.inference_mode():
        hf_topk(model, [p.prompt for p in prompts[ALIGN][:2]], b.trie, k, pad,
                exclude=[p.exclude for p in prompts[ALIGN][:2]], batch_size=2)  # warm-up
        for r in range(reps):
            for a in ([ALIGN, 0] if r % 2 == 0 else [0, ALIGN]):
                t0 = time.perf_counter()
                hf_topk(model, [p.prompt for p in prompts[a]], b.trie, k, pad, exclude=[p.exclude for p in prompts[a]],
                        batch_size=hf_batch)
                sec = time.perf_counter() - t0
                res["hf"][a].append({"seconds": round(sec, 2), "users_per_s": n_users / sec, "load": load()})
                print(f"  hf_topk align={a}: {n_users / sec:.2f} users/s, load {load()}", flush=True)
    for a in views:
        g = statistics.median(x["users_per_s"] for x in res["generate"][a])
        h = statistics.median(x["users_per_s"] for x in res["hf"][a])
        res[f"median_{a}"] = {"generate_users_per_s": g, "hf_users_per_s": h, "ratio": g / h,
                              "engine_requests_per_user": statistics.median(
                                  x["engine_requests_per_user"] for x in res["generate"][a])}
    return res


def quality(bundles: dict[int, Path], n_users: int, seed: int) -> dict:
    from generative_rec.bundle import Bundle
    from generative_rec.config import EvalSection
    from generative_rec.data import RecData
    from generative_rec.evaluation.llm import evaluate_bundle_llm

    out = {}
    for a, path in bundles.items():
        b = Bundle(path)
        data = RecData(b.manifest["data"]["path"])
        users = data.sample_users(n_users, seed)
        cfg = EvalSection(split="test", users=n_users, seed=seed, ks=[10], baselines=[], unconstrained_users=0)
        t0, l0 = time.time(), load()
        r = evaluate_bundle_llm(b, data, users, cfg, progress=False)
        out[a] = {"users": int(len(users)), "NDCG@10": r["metrics"]["NDCG@10"], "HR@10": r["metrics"]["HR@10"],
                  "seconds": round(time.time() - t0, 1), "load": (l0, load()),
                  "per_user_ndcg": [float(x) for x in r["per_user"]["NDCG@10"]]}
        print(f"  quality align={a}: NDCG@10 {out[a]['NDCG@10']:.4f} HR@10 {out[a]['HR@10']:.4f} "
              f"({out[a]['seconds']} s)", flush=True)
    x, y = np.asarray(out[ALIGN]["per_user_ndcg"]), np.asarray(out[0]["per_user_ndcg"])
    rng = np.random.default_rng(0)
    boots = [float((x[i] - y[i]).mean()) for i in (rng.integers(0, len(x), len(x)) for _ in range(2000))]
    out["ndcg_diff"] = {"mean": float((x - y).mean()), "ci95": (float(np.percentile(boots, 2.5)),
                                                                 float(np.percentile(boots, 97.5)))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemes", nargs="+", default=["sequential", "semantic"])
    ap.add_argument("--steps", type=int, default=30, help="training steps of every bundle (same budget)")
    ap.add_argument("--users", type=int, default=48, help="users per batch-generation timing")
    ap.add_argument("--reps", type=int, default=3, help="timing rounds per prompt form (medians reported)")
    ap.add_argument("--quality-users", type=int, default=150, help="seeded test users for NDCG@10")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-batch-size", type=int, default=16)
    ap.add_argument("--work", default="runs/prompt-align")
    ap.add_argument("--output", help="Markdown report (JSON beside it)")
    ap.add_argument("--config", default="train/configs/demo_cpu.yaml", help="base run config of every bundle")
    ap.add_argument("--set", nargs="*", default=[], help="extra section.key=value overrides (after the bench's)")
    ap.add_argument("--phases", nargs="+", default=["speed", "quality"], help="speed and/or quality")
    a = ap.parse_args()

    from generative_rec.evaluation.run import git_commit, machine

    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sp = work / "state.json"
    state = json.loads(sp.read_text()) if sp.exists() else {}
    state.update(machine=machine(), commit=git_commit(),
                 command=" ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    state.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    state.setdefault("load_at_start", [round(x, 2) for x in os.getloadavg()])

    def save():
        sp.write_text(json.dumps(state, indent=1, default=str) + "\n")
        if a.output:
            Path(a.output).write_text(render(state))
            Path(a.output).with_suffix(".json").write_text(
                json.dumps({k: v for k, v in state.items()}, indent=1, default=str) + "\n")

    for scheme in a.schemes:
        aligned = train(scheme, ALIGN, a.steps, work, state, a.config, a.set)
        save()
        if "speed" in a.phases and f"speed/{scheme}" not in state:
            print(f"[{time.strftime('%H:%M:%S')}] speed {scheme}", flush=True)
            state[f"speed/{scheme}"] = speed(aligned, a.users, a.reps, a.k, a.seed, a.hf_batch_size, work)
            save()
    for scheme in a.schemes:
        if "quality" in a.phases and f"quality/{scheme}" not in state:
            plain = train(scheme, 0, a.steps, work, state, a.config, a.set)
            save()
            print(f"[{time.strftime('%H:%M:%S')}] quality {scheme}", flush=True)
            state[f"quality/{scheme}"] = quality({ALIGN: work / f"{scheme}-a{ALIGN}", 0: plain}, a.quality_users,
                                                 a.seed)
            save()
    print(render(state))


def rates(rows: list[dict]) -> str:
    return ", ".join(f"{x['users_per_s']:.2f}" for x in rows)


def loads(rows: list[dict]) -> str:
    return "/".join(str(x["load"]) for x in rows)


def render(s: dict) -> str:
    lines = ["# Block-aligned prompts (`prompts.align: 32`): batch generation vs HF, and the quality cost", "",
             f"- Command: `{s.get('command')}` (started {s.get('started')} UTC)",
             f"- Machine: {s.get('machine')}; load averages (1/5/15 min) at start: {s.get('load_at_start')}; "
             "per-phase 1-minute load averages below (the bench itself keeps ~2 on 2 cores): compare ratios and "
             "medians, not absolute numbers",
             f"- Commit: {s.get('commit')}", ""]
    trains = {k: v for k, v in s.items() if k.startswith("train/")}
    if trains:
        lines += ["## Bundles (SmolLM2-135M, MovieLens-100K, same budget)", "",
                  "| scheme | align | steps | tokens | final loss | seconds | load before / after |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for k, v in trains.items():
            _, scheme, align = k.split("/")
            lines.append(f"| {scheme} | {align} | {v['steps']} | {v['tokens']} | {v['final_loss']} | {v['seconds']} | "
                         f"{v['load_before']} / {v['load_after']} |")
        lines += ["", "Training command (per bundle): `" + next(iter(trains.values()))["command"] + "`", ""]
    speeds = {k.split("/")[1]: v for k, v in s.items() if k.startswith("speed/")}
    if speeds:
        lines += ["## Batch generation: `genrec generate` (vLLM) vs `hf_topk` (KV-cached HF), same weights, same users",
                  "", "One engine over the aligned bundle; the unaligned rows use the same histories rendered "
                  "without fillers (the bundle with `prompt_align: 0`). Medians of the rounds; ratio = median "
                  "generate users/s / median HF users/s.", "",
                  "| scheme | prompts | mean prompt tokens | tokens past the last full block | generate users/s "
                  "(rounds) | engine requests / user | HF users/s (rounds) | ratio vs HF, same prompts | ratio vs HF "
                  "on unaligned prompts | load (generate / HF) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for scheme, r in speeds.items():
            for a in (str(ALIGN), "0"):
                g = r["generate"].get(a, r["generate"].get(int(a)))
                h = r["hf"].get(a, r["hf"].get(int(a)))
                m = r.get(f"median_{a}")
                pt = r["prompt_tokens_mean"].get(a, r["prompt_tokens_mean"].get(int(a)))
                tail = r["partial_block_tokens_mean"].get(a, r["partial_block_tokens_mean"].get(int(a)))
                form = "aligned (32)" if a != "0" else "unaligned"
                lines.append(
                    f"| {scheme} | {form} | {pt:.0f} | {tail:.1f} | {m['generate_users_per_s']:.2f} ({rates(g)}) | "
                    f"{m['engine_requests_per_user']:.1f} | {m['hf_users_per_s']:.2f} ({rates(h)}) | "
                    f"**{m['ratio']:.2f}x** | {m['generate_users_per_s'] / r['median_0']['hf_users_per_s']:.2f}x | "
                    f"{loads(g)} / {loads(h)} |")
            lines.append(f"| {scheme} | | | | | | | | | {r['users']} users, k = {r['k']}, HF batch {r['hf_batch']}; "
                         f"same top-10 aligned vs unaligned prompts: {r['same_top10_share']:.0%} of users |")
        lines.append("")
    quals = {k.split("/")[1]: v for k, v in s.items() if k.startswith("quality/")}
    if quals:
        lines += ["## Quality: NDCG@10 on the same seeded test users (HF decoder, history masked)", "",
                  "| scheme | users | NDCG@10 aligned | NDCG@10 unaligned | aligned - unaligned (95% bootstrap CI) | "
                  "HR@10 aligned / unaligned |", "|---|---:|---:|---:|---:|---:|"]
        for scheme, q in quals.items():
            qa, q0 = q.get(str(ALIGN), q.get(ALIGN)), q.get("0", q.get(0))
            d = q["ndcg_diff"]
            lines.append(f"| {scheme} | {qa['users']} | {qa['NDCG@10']:.4f} | {q0['NDCG@10']:.4f} | {d['mean']:+.4f} "
                         f"({d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}) | {qa['HR@10']:.4f} / {q0['HR@10']:.4f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
