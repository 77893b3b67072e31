"""Training and evaluation throughput of the CPU demo setting, side by side in one run.

    python bench/throughput.py                       # SmolLM2-135M, MovieLens-100K, demo settings
    python bench/throughput.py --threads 1 2 --steps 12 --users 64

Training: LoRA (r=16, all linear layers) steps on the demo's packed 20-item windows; tokens/s from the
median step time after two warm-up steps. Evaluation: users/s of the KV-cached batched constrained beam
search (what `genrec eval` runs) and of the HF `generate` reference decoder on the same users, for atomic
(1-token) and sequential (4-digit) IDs. Results go to bench/results/throughput.md with machine and commit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--users", type=int, default=48)
    p.add_argument("--ref-users", dest="ref_users", type=int, default=12, help="users for the slow reference")
    p.add_argument("--data", default=str(ROOT / "data" / "ml-100k"))
    a = p.parse_args()

    from generative_rec.config import RunConfig, from_dict
    from generative_rec.decoding.hf import hf_generate_topk, rank_histories
    from generative_rec.evaluation.metrics import format_table
    from generative_rec.evaluation.run import git_commit, machine
    from generative_rec.indexing import build_index
    from generative_rec.modeling import add_item_tokens, apply_lora, untie_output_embeddings
    from generative_rec.prompts import Renderer, load_templates
    from generative_rec.training import (
        TargetOnlyLM,
        TrainingSetup,
        ensure_data,
        epoch_examples,
        load_base,
        make_batches,
        select_templates,
    )

    rows = {}
    for scheme in ("atomic", "sequential"):
        cfg = from_dict(RunConfig, {
            "data": {"path": a.data, "prepare": {"source": "ml-100k"}}, "index": {"scheme": scheme},
            "prompts": {"templates": ["next_item/compact"], "inference": "next_item/compact", "max_history": 20},
            "output": "/tmp/unused"})
        data = ensure_data(cfg)
        index = build_index(data, cfg.index)
        model, tok = load_base(cfg, data, Path("/tmp/genrec-bench-work"))
        new_ids = add_item_tokens(model, tok, index.new_tokens, index.token_items, data.titles)
        if new_ids:
            untie_output_embeddings(model)
        r = Renderer(tok, index.token_ids(tok), data.titles, "movie")
        trie = index.build_trie(tok)
        tpl = next(t for t in load_templates()["next_item"] if t.name == "compact")
        users = data.sample_users(a.users, seed=0)
        hist = [data.history(int(u), "test")[-20:] for u in users]
        for threads in a.threads:
            torch.set_num_threads(threads)
            row = {"threads": threads}
            # ---- training
            pm = apply_lora(model, cfg.lora, new_ids, untied=bool(new_ids))
            setup = TrainingSetup(cfg, data, r, select_templates(cfg), new_ids)
            batches = make_batches(epoch_examples(setup, 0), 8, tok.pad_token_id, 0)
            w = TargetOnlyLM(pm)
            opt = torch.optim.AdamW([q for q in w.parameters() if q.requires_grad], lr=1e-4)
            times, toks = [], []
            for b in batches[: a.steps + 2]:
                t0 = time.perf_counter()
                loss, _ = w(**b)
                loss.backward()
                opt.step()
                opt.zero_grad()
                times.append(time.perf_counter() - t0)
                toks.append(int(b["attention_mask"].sum()))
            med = statistics.median(times[2:])
            row["train tokens/s"] = round(statistics.median(toks[2:]) / med, 1)
            row["train s/step (batch 8)"] = round(med, 2)
            model = pm.unload()  # drop the adapters again
            # ---- evaluation: batched KV-cached beam search vs HF generate reference
            model.eval()
            with torch.inference_mode():
                t0 = time.perf_counter()
                rank_histories(model, r, trie, hist, tpl, 20, exclude=hist, batch_size=16, pad_id=tok.pad_token_id,
                         progress=False)
                fast = len(hist) / (time.perf_counter() - t0)
                t0 = time.perf_counter()
                for h in hist[: a.ref_users]:
                    hf_generate_topk(model, r.prompt_ids(tpl, h), trie, 20, tok.eos_token_id, exclude=h)
                ref = a.ref_users / (time.perf_counter() - t0)
            model.train()
            row["eval users/s (batched)"] = round(fast, 2)
            row["eval users/s (HF generate)"] = round(ref, 2)
            row["speed-up"] = round(fast / ref, 1)
            rows[f"{scheme} IDs, {threads} thread(s)"] = row
            print(row, flush=True)
    table = format_table(rows, ["train tokens/s", "train s/step (batch 8)", "eval users/s (batched)",
                                "eval users/s (HF generate)", "speed-up"], digits=2)
    cmd = "python bench/throughput.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        "# Training and evaluation throughput (CPU)", "",
        "SmolLM2-135M-Instruct fp32 + LoRA r=16 (all linear layers), MovieLens-100K, template next_item/compact "
        "(20-item windows, loss on every item). Evaluation: top-20 over the full catalogue with history masked, "
        f"{a.users} test users (reference decoder: first {a.ref_users}).", "",
        table, "", f"Command: `{cmd}`  ", f"Machine: {machine()}  ",
        f"Commit: {git_commit()}; {time.strftime('%Y-%m-%d %H:%M')}", ""])
    out = ROOT / "bench" / "results" / "throughput.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
