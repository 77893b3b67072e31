"""Explanations before and after a short CPU fine-tune: faithfulness (and BLEU-4 / ROUGE-L on Amazon reviews).

    OMP_NUM_THREADS=1 python bench/explain_bench.py --data ml-100k amazon --steps 50 --users 30
    # writes bench/results/explain.md and bench/results/explain.json; bundles under runs/bench/explain/

Per data set, three bundles of the embedded SmolLM2-135M-Instruct (atomic item IDs, LoRA r=16, all linear):

- ``before``: zero training steps — the base model (plus the untrained item-ID tokens, which are suppressed
  while explaining), prompted zero-shot with the held-out explain template, as plain text (the contract) and
  wrapped in the instruct model's chat template (its best zero-shot use);
- ``after``: ``--steps`` optimizer steps of batch 8 on the task mixture next_item 1.0 + explain 1.0;
- ``after+domain_text`` (unless ``--no-domain-text``): the same steps with domain_text mixed in (about a
  third of the examples: item text, and training-part reviews on Amazon) — same budget, so it displaces
  next_item / explain updates; this is the question "does domain text help at a fixed budget?".

Each bundle: explanations of the held-out test target and of the bundle's own top-1 recommendation for
``--users`` seeded test users, with the held-out template (all stages) and the first trained template
(fine-tuned stages; the one serving uses); plus NDCG@10 / HR@10 on ``--rank-users`` test users (full
ranking, history masked) so the cost of the explain task to recommendation is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from generative_rec.bundle import Bundle, load_bundle_model  # noqa: E402
from generative_rec.config import RunConfig, from_dict  # noqa: E402
from generative_rec.data import PrepareConfig, RecData, prepare  # noqa: E402
from generative_rec.evaluation.llm import evaluate_llm  # noqa: E402
from generative_rec.evaluation.run import git_commit, machine  # noqa: E402
from generative_rec.explain.contract import heldout_explain_template, trained_explain_templates  # noqa: E402
from generative_rec.explain.evaluate import REPORT_COLUMNS, evaluate_bundle_explanations  # noqa: E402
from generative_rec.training import train  # noqa: E402

AMAZON = (Path(os.environ.get("GENREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
          / "amazon-musical-instruments-2014" / "reviews_Musical_Instruments_5.json.gz")
DATA = {  # name -> (prepared folder, PrepareConfig fields, domain_text weight giving ~1/3 of the mixture)
    "ml-100k": (ROOT / "data" / "ml-100k", {"source": "ml-100k"}, 0.6),
    # No attribute field on Amazon: its mined keywords include generic words ("choice", "design", "sound"), so
    # as a claim vocabulary they flag most real review sentences too; titles + BLEU/ROUGE are measured there.
    "amazon": (ROOT / "data" / "amazon-mi", {"source": "amazon", "amazon": {"path": str(AMAZON)}}, 0.17),
}


def run_config(data_path: Path, out: Path, tasks: dict, steps: int, seed: int) -> RunConfig:
    return from_dict(RunConfig, {
        "data": {"path": str(data_path)},
        "index": {"scheme": "atomic"},
        "model": {"base": "smollm2-135m", "dtype": "float32", "popularity_start": True},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "prompts": {"tasks": tasks, "inference": "next_item/compact", "max_history": 20,
                    "templates": ["next_item/compact", "explain/why", "explain/reason", "explain/explain-list",
                                  "explain/because", "domain_text/item-text", "domain_text/item-about",
                                  "domain_text/review", "domain_text/review-summary"],
                    "task_options": {"explain": {"max_history": 10}, "domain_text": {"max_tokens": 160}}},
        "train": {"max_steps": steps, "batch_size": 8, "lr": 0.002, "warmup_ratio": 0.05, "scheduler": "cosine",
                  "save_every": 0, "eval_users": 20, "log_every": 10, "seed": seed},
        "output": str(out),
    })


def ensure_prepared(name: str) -> Path:
    path, fields, _ = DATA[name]
    if not (path / "meta.json").exists():
        prepare(PrepareConfig(**fields, output=str(path)))
    return path


def ranking(bundle: Bundle, model, data: RecData, users: int) -> dict:
    if users <= 0:
        return {}
    res = evaluate_llm(model, bundle.renderer, bundle.trie, data, "test", data.sample_users(users, 0),
                       bundle.template(), ks=[10], num_beams=10, pad_id=bundle.tokenizer.pad_token_id,
                       max_history=bundle.manifest.get("max_history"), progress=False)
    return {k: round(float(res["metrics"][k]), 4) for k in ("HR@10", "NDCG@10")}


def chat_prompt(bundle):
    """Wrap the rendered explain prompt (decoded) as one user turn of the model's chat template."""
    tok = bundle.tokenizer

    def fn(t, item, hist):
        text = tok.decode(bundle.renderer.item_prompt_ids(t, item, history=hist), skip_special_tokens=True).strip()
        enc = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
        return list(enc["input_ids"] if hasattr(enc, "keys") else enc)

    return fn


def bench_stage(name: str, stage: str, tasks: dict, steps: int, a) -> dict:
    data_path = ensure_prepared(name)
    out = ROOT / "runs" / "bench" / "explain" / name / stage
    t0 = time.time()
    if not (a.reuse and (out / "model" / "config.json").exists()):
        train(run_config(data_path, out, tasks, steps, a.seed), overwrite=True)
    train_s = time.time() - t0
    bundle, data = Bundle(out), RecData(data_path)
    model = load_bundle_model(bundle)
    tr = bundle.metrics.get("train", {})
    rec = {"stage": stage, "tasks": tasks, "steps": steps, "train_wall_s": round(train_s, 1),
           "train": {k: tr.get(k) for k in ("steps", "tokens", "target_tokens", "train_seconds", "tokens_per_s",
                                            "final_loss")},
           "ranking": ranking(bundle, model, data, a.rank_users), "explanations": {}}
    held = heldout_explain_template(bundle).key
    runs = [(held, held, None)] + [(t.key, t.key, None) for t in trained_explain_templates(bundle)[:1]]
    if stage == "before":  # the zero-shot instruct model at its best: the same prompt inside its chat template
        runs.append((held + "+chat", held, chat_prompt(bundle)))
    for label, key, fn in runs:
        te = time.time()
        rep = evaluate_bundle_explanations(bundle, data, "test", n=a.users, seed=a.seed, model=model, template=key,
                                           max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, n_examples=3,
                                           prompt_fn=fn)
        rep["eval_wall_s"] = round(time.time() - te, 1)
        rec["explanations"][label] = rep
        print(f"[{name}/{stage}] {label}: target {_short(rep['target'])} | top1 {_short(rep['top1'])}", flush=True)
    del model
    if not a.keep:
        for sub in ("model", "adapter"):
            shutil.rmtree(out / sub, ignore_errors=True)
    return rec


def _short(r: dict) -> str:
    return ", ".join(f"{k}={r[k]:.3f}" for k in ("hallucination_rate", "citation_rate", "bleu4", "rouge_l_f") if k in r)


def markdown(results: dict, command: str) -> str:
    cols = [(k, h) for k, h in REPORT_COLUMNS]
    lines = ["# Explanations: faithfulness before and after a short CPU fine-tune", "",
             f"- command: `{command}`",
             f"- machine: {results['machine']}; torch threads {results['threads']}; commit `{results['commit']}`"
             f" (plus the uncommitted explain work); {results['date']}",
             f"- model: SmolLM2-135M-Instruct (embedded GGUF, de-quantised, fp32), atomic item IDs, LoRA r=16 on all "
             f"linear layers, batch 8, lr 2e-3 cosine; {results['args']['steps']} optimizer steps per fine-tune",
             f"- explanations: {results['args']['users']} seeded test users (seed {results['args']['seed']}), greedy, "
             f"<= {results['args']['max_new_tokens']} new tokens, history shown: last 10 items; faithfulness checked "
             f"against the shown history; ranking: {results['args']['rank_users']} test users, full catalogue, "
             f"history masked. With {results['args']['users']} users a rate's 95% interval is roughly "
             f"+-{1.96 * 0.5 / results['args']['users'] ** 0.5:.2f} at worst: read small differences as noise.", "",
             "Rows: `target` = explaining the held-out test item (reference: the user's own review sentence on "
             "Amazon, so BLEU-4 / ROUGE-L are computed there), `top1` = explaining the bundle's own top-1 "
             "recommendation (what serving explains), `reference` = the ground-truth reasons scored by the same "
             "checks (MovieLens: templated, faithful by construction; Amazon: the users' real review sentences — "
             "the noise floor of the title matcher on titles mined from reviews). Hallucination = names a "
             "catalogue title outside the shown history and the item, or claims an attribute (MovieLens genre) "
             "that neither the item nor a cited history item has. Amazon is prepared without attributes: its "
             "mined keywords contain generic words (\"choice\", \"design\", \"sound\"), and with them as the claim "
             "vocabulary 2 of 3 real review sentences counted as hallucinating in a trial, so there only titles "
             "and BLEU-4 / ROUGE-L are measured. Claim-level columns: titles named / attributes claimed per "
             "explanation and the share supported (`title prec.`, `attr. prec.`) — a model that says nothing "
             "checkable has a low hallucination rate but cites nothing.", ""]
    for name, stages in results["data"].items():
        lines += [f"## {name}", "",
                  "| stage | template | explained | " + " | ".join(h for _, h in cols) + " | NDCG@10 | HR@10 |",
                  "|---" * (len(cols) + 5) + "|"]
        for rec in stages:
            for key, rep in rec["explanations"].items():
                tname = key.split("/", 1)[1].replace("+chat", " in the chat template") + \
                    (" (held out)" if rep["template_heldout"] else "")
                for row in ("target", "top1", "reference"):
                    if row == "reference" and (rec is not stages[0] or key != next(iter(rec["explanations"]))):
                        continue  # the references depend on the data only: shown once
                    vals = [f"{rep[row][k]:.3f}" if k in rep[row] else "" for k, _ in cols]
                    rk = rec["ranking"] if row == "target" else {}
                    lines.append(f"| {rec['stage']} | {tname} | {row} | " + " | ".join(vals) +
                                 f" | {rk.get('NDCG@10', '')} | {rk.get('HR@10', '')} |")
        lines += ["", "Training: " + "; ".join(
            f"{r['stage']}: {r['train']['steps']} steps, {r['train']['tokens']} tokens, {r['train']['train_seconds']} s "
            f"({r['train']['tokens_per_s']} tok/s), final loss {r['train']['final_loss']}" for r in stages), ""]
        lines += ["Examples (first users, held-out template):", ""]
        for rec in stages:
            rep = next(iter(rec["explanations"].values()))
            for ex in rep["examples"][:2]:
                lines.append(f"- **{rec['stage']}**, user {ex['user_id']}, target *{ex['target']}*: "
                             f"\"{ex['target_explanation']}\" — reference: \"{ex['reference']}\"; top-1 *{ex['top1']}*: "
                             f"\"{ex['top1_explanation']}\"")
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: Path, text: str) -> None:
    """Write the generated tables, keeping a hand-written ``## Findings`` section of an existing file."""
    old = path.read_text() if path.exists() else ""
    keep = old[old.index(FINDINGS):] if FINDINGS in old else ""
    path.write_text(text.rstrip() + "\n\n" + keep if keep else text)


FINDINGS = "## Findings"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=["ml-100k", "amazon"], choices=sorted(DATA))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--rank-users", dest="rank_users", type=int, default=200)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=64)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-domain-text", dest="domain_text", action="store_false")
    p.add_argument("--reuse", action="store_true", help="keep stage results already in the output JSON (same "
                   "steps, tasks and users) and bundles already under runs/bench/explain (with --keep)")
    p.add_argument("--keep", action="store_true", help="keep the bundles' model weights (deleted by default)")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "explain"))
    p.add_argument("--render", action="store_true", help="only rewrite the Markdown from the output JSON")
    a = p.parse_args()
    if a.render:
        results = json.loads(Path(a.output).with_suffix(".json").read_text())
        write_markdown(Path(a.output).with_suffix(".md"), markdown(results, results.get("command", "")))
        return
    torch.manual_seed(a.seed)
    command = "OMP_NUM_THREADS=1 python bench/explain_bench.py " + " ".join(sys.argv[1:])
    out_json = Path(a.output).with_suffix(".json")
    previous = json.loads(out_json.read_text()) if a.reuse and out_json.exists() else {"data": {}}
    results: dict = {"data": {k: v for k, v in previous["data"].items() if k not in a.data}}  # other data sets kept
    results.update({"command": command, "machine": machine(), "threads": torch.get_num_threads(), "commit": git_commit(),
                    "date": time.strftime("%Y-%m-%d", time.gmtime()), "args": vars(a)})
    for name in a.data:
        w = DATA[name][2]
        stages = [("before", {"next_item": 1.0}, 0), ("after", {"next_item": 1.0, "explain": 1.0}, a.steps)]
        if a.domain_text:
            stages.append(("after+domain_text", {"next_item": 1.0, "explain": 1.0, "domain_text": w}, a.steps))
        results["data"][name] = []
        done = {r["stage"]: r for r in previous["data"].get(name, [])}
        for stage, tasks, steps in stages:
            old = done.get(stage)
            same = old is not None and old["steps"] == steps and old["tasks"] == tasks and \
                previous.get("args", {}).get("users") == a.users
            results["data"][name].append(old if same else bench_stage(name, stage, tasks, steps, a))
            out_json.parent.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(results, indent=1))
            write_markdown(Path(a.output).with_suffix(".md"), markdown(results, command))
    print(f"written {Path(a.output).with_suffix('.md')}")


if __name__ == "__main__":
    main()
