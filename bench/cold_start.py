"""New items and short histories: every model under the cold-start protocol -> bench/results/cold_start.*

    python bench/cold_start.py                                  # ML-100K and Amazon, LLM atomic + semantic
    python bench/cold_start.py --datasets ml-100k --schemes atomic semantic title

For each data set:

1. **data** — prepared with ``new_items: 0.1`` (``genrec prepare --new-items 0.1``; the protocol in
   docs/evaluation.md): a seeded 10 % of the catalogue loses every training interaction and appears only as a
   validation / test target;
2. **LLM bundles** — one per ID scheme, trained from the CPU tier's run config (train/configs/cpu_tier.yaml)
   on that data; for schemes other than atomic the collaborative start / distillation (an atomic-only
   feature) is off. Reused when the bundle exists;
3. **every model on the same test users** — `genrec benchmark`'s runner: the baselines tuned on validation,
   each LLM bundle evaluated; every record carries the slices (new / known target, history length) and the
   ranking among the new items only;
4. **the known-item check** — on users whose target is a known item, the LLM's NDCG@10 against the same
   users' NDCG@10 (matched by user id) of the same run config trained and evaluated under the standard
   protocol (``--standard-schemes``, default atomic; bundles in ``<work>/<data>/standard-llm-<scheme>``).

Writes ``bench/results/cold_start.json`` (per data set: records, slices, ``comparison`` on new-item targets:
best LLM scheme vs best other model, their ratio and a paired test), ``cold_start.md`` and
``cold_start.png`` (NDCG@10 by history length, every model). Steps that finished are kept (``--resume`` is
always on: delete ``runs/cold-start`` to start over).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import DATASETS, ensure_dataset  # noqa: E402

BASELINES = ("pop", "itemknn", "bpr", "sasrec", "lightgcn", "content_knn", "mf_llm_init")
WHY_NOT = {  # schemes that cannot express a new item, and why (also in docs/evaluation.md)
    "sequential": "IDs are numbers in the order items first appear in training: a new item has no position "
                  "the model was trained to produce, so its ID is arbitrary text to the model",
    "random": "random digit strings carry no information about the item; a new one is never trained",
    "collaborative": "codes come from co-occurrence in the training part; a new item has none (it falls "
                     "back to an arbitrary code)",
}


def rel(p: Path) -> str:
    p = Path(os.path.abspath(p))  # not resolve(): a symlinked runs/ stays under the repository
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def prepare_cold(name: str, fraction: float, seed: int) -> Path:
    from generative_rec.data import PrepareConfig, prepare

    folder, fields, _ = DATASETS[name]
    out = folder.with_name(folder.name + "-cold")
    if not (out / "meta.json").exists():
        print(f"preparing {name} (new items {fraction:.0%}) into {out}", flush=True)
        prepare(PrepareConfig(output=str(out), new_items=fraction, new_items_seed=seed, **fields))
    return out


TRAIN = True  # --no-train: a missing bundle is skipped (and reported) instead of trained


def train_bundle(data: Path, scheme: str, out: Path, sets: tuple[str, ...] = ()) -> Path | None:
    """The CPU tier's LLM on ``data`` with ``scheme`` IDs (``genrec train``; reused when it exists); ``sets``:
    more ``--set key=value`` overrides."""
    if (out / "bundle.json").exists():
        return out
    if not TRAIN:
        print(f"  {out} is not trained: skipped (--no-train)", flush=True)
        return None
    cmd = [sys.executable, "-m", "generative_rec", "train", "--config", "train/configs/cpu_tier.yaml", "--overwrite",
           "--set", f"data.path={data}", "--set", f"index.scheme={scheme}", "--set", f"output={out}"]
    if scheme != "atomic":
        cmd += ["--set", "model.collaborative.source=null", "--set", "model.collaborative.distill=0"]
    for kv in sets:
        cmd += ["--set", kv]
    print("  " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def standard_reference(name: str, scheme: str, cold, users: np.ndarray, out: Path) -> np.ndarray | None:
    """Per-user test NDCG@10 of the same run config trained and evaluated under the *standard* protocol, for
    the cold data's ``users`` (matched by user id): the LLM's "own score" for the known-item check."""
    from generative_rec.benchmark.runner import run_benchmark
    from generative_rec.data import RecData

    folder = DATASETS[name][0]
    ensure_dataset(name)
    bundle = train_bundle(folder, scheme, out / f"standard-llm-{scheme}")
    if bundle is None:
        return None
    run_benchmark(folder, "cpu", ["llm"], bundle=bundle, output=out / f"standard-eval-{scheme}", resume=True,
                  progress=False, command=None)
    std = RecData(folder)
    with np.load(out / f"standard-eval-{scheme}" / "per_user.npz") as z:
        by_id = {std.user_ids[u]: v for u, v in zip(z["users"], z["llm/NDCG@10"], strict=True)}
    vals = [by_id.get(cold.user_ids[u]) for u in users]
    return None if any(v is None for v in vals) else np.asarray(vals, dtype=np.float64)


PRIOR_RULES = {"+prior": None, "+prior@5%": 0.05}  # record suffix -> max_known_loss of tune_beta


def _two_lists_cached(bundle, model, data, split: str, users, k: int, cfg, path: Path):
    """``two_lists`` for ``users`` on ``split``, cached in ``path`` (.npz, written atomically)."""
    import dataclasses
    import io

    from generative_rec.evaluation.new_item_prior import TwoLists, two_lists
    from generative_rec.io import atomic_write_bytes

    names = [f.name for f in dataclasses.fields(TwoLists)]
    if path.exists():
        with np.load(path) as z:
            return TwoLists(**{f: z[f] for f in names})
    lists = two_lists(bundle, model, data, split, users, k, cfg, progress=False)
    buf = io.BytesIO()
    np.savez(buf, **{f: getattr(lists, f) for f in names})
    atomic_write_bytes(path, buf.getvalue())
    return lists


def prior_records(bundle_path: Path, data, users: np.ndarray, out: Path) -> dict[str, tuple]:
    """The LLM with a new-item prior (generative_rec/evaluation/new_item_prior.py) under each rule of
    ``PRIOR_RULES``: beta chosen on every validation user, then the merged lists on the test ``users``. Both
    searches are cached in ``out`` (``valid.npz``, ``test.npz``); returns suffix -> (record, per-user NDCG@10)."""
    from generative_rec.bundle import Bundle, load_bundle_model
    from generative_rec.config import EvalSection
    from generative_rec.evaluation.metrics import KS, accuracy
    from generative_rec.evaluation.new_item_prior import BETA_GRID, merge, tune_beta
    from generative_rec.evaluation.slices import slice_masks, slice_means

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    bundle = Bundle(bundle_path, catalogue_version=0)
    model = load_bundle_model(bundle)
    cfg = EvalSection(split="test", ks=list(KS), batch_size=16, mask_history=True, baselines=[])
    k = max(KS)
    valid_users = np.arange(data.num_users)
    valid = _two_lists_cached(bundle, model, data, "valid", valid_users, k, cfg, out / "valid.npz")
    test = _two_lists_cached(bundle, model, data, "test", users, k, cfg, out / "test.npz")
    search_s = round(time.time() - t0, 1)
    _, test_curve = tune_beta(test, data.new_items, k)  # reported only (the trade-off plot), never chosen on
    results = {}
    for suffix, max_known_loss in PRIOR_RULES.items():
        beta, curve = tune_beta(valid, data.new_items, k, max_known_loss=max_known_loss)
        acc = accuracy(merge(test, data.new_items, beta, k), test.targets, KS)
        per_user = {m: np.asarray(v, dtype=np.float64) for m, v in acc.per_user.items()}
        rule = ("best validation NDCG@10 over all users" if max_known_loss is None else
                f"best validation NDCG@10 on new-item targets, known-item targets within {max_known_loss:.0%} of beta 0")
        results[suffix] = ({
            "model": f"{bundle_path.name}{suffix}", "kind": "llm", "metrics": dict(acc.means), "beta": beta,
            "rule": rule, "max_known_loss": max_known_loss, "valid_users": int(len(valid_users)),
            "valid_curve": {str(b): v for b, v in curve.items()}, "test_curve": {str(b): v for b, v in test_curve.items()},
            "beta_grid": list(BETA_GRID), "slices": slice_means(per_user, slice_masks(data, users)),
            "seconds": search_s, "params": {"bundle": rel(bundle_path), "scheme": bundle.index.scheme}},
            per_user["NDCG@10"])
    return results


def run_dataset(name: str, schemes: list[str], standard_schemes: list[str], fraction: float, seed: int,
                work: Path, prior_schemes: list[str] = ()) -> dict:
    from generative_rec.benchmark.runner import run_benchmark
    from generative_rec.benchmark.tables import _paired
    from generative_rec.data import RecData
    from generative_rec.evaluation.slices import slice_masks

    t0 = time.time()
    data_path = prepare_cold(name, fraction, seed)
    data = RecData(data_path)
    out = work / DATASETS[name][0].name
    records, arrays = {}, {}
    rep = run_benchmark(data_path, "cpu", BASELINES, output=out / "baselines", resume=True, progress=False,
                        command=None)
    for m, r in rep["models"].items():
        records[m] = r
    with np.load(out / "baselines" / "per_user.npz") as z:
        users = z["users"]
        for m in BASELINES:
            arrays[m] = z[f"{m}/NDCG@10"]
    skipped = []
    for scheme in schemes:
        bundle = train_bundle(data_path, scheme, out / f"llm-{scheme}")
        if bundle is None:
            skipped.append(scheme)
            continue
        r = run_benchmark(data_path, "cpu", ["llm"], bundle=bundle, output=out / f"eval-{scheme}", resume=True,
                          progress=False, command=None)
        records[f"llm-{scheme}"] = r["models"]["llm"]
        with np.load(out / f"eval-{scheme}" / "per_user.npz") as z:
            assert (z["users"] == users).all(), "every model must be evaluated on the same users"
            arrays[f"llm-{scheme}"] = z["llm/NDCG@10"]
        if scheme in prior_schemes:
            for suffix, (rec_p, arr) in prior_records(bundle, data, users, out / f"prior-{scheme}").items():
                rec_p["new_only"] = records[f"llm-{scheme}"].get("new_only")  # the same new-items-only search
                records[f"llm-{scheme}{suffix}"] = rec_p
                arrays[f"llm-{scheme}{suffix}"] = arr
    masks = slice_masks(data, users)
    new, known = masks["new target"], masks["known target"]

    def on(m: str, mask) -> float:
        return float(arrays[m][mask].mean())

    llms = [m for m in records if m.startswith("llm-")]
    others = [m for m in records if not m.startswith("llm-")]
    best_llm = max(llms, key=lambda m: on(m, new))
    best_other = max(others, key=lambda m: on(m, new))
    comparison = {"slice": "new target", "users": int(new.sum()), "metric": "NDCG@10",
                  "best_llm": best_llm, "llm_NDCG@10": on(best_llm, new),
                  "best_baseline": best_other, "best_baseline_NDCG@10": on(best_other, new),
                  "ratio": on(best_llm, new) / on(best_other, new) if on(best_other, new) > 0 else math.inf,
                  "paired": _paired(arrays[best_llm][new], arrays[best_other][new]),
                  "per_model_NDCG@10": {m: on(m, new) for m in records}}
    known_check, standard = {}, {}
    for m in llms:
        row = {"users": int(known.sum()), "cold_protocol_NDCG@10": on(m, known)}
        scheme = m.removeprefix("llm-").split("+")[0]
        if scheme in standard_schemes:
            if scheme not in standard:  # one reference per scheme, shared by its +prior records
                standard[scheme] = standard_reference(name, scheme, data, users, out)
            std = standard[scheme]
            if std is not None:
                row["standard_protocol_NDCG@10"] = float(std[known].mean())
                row["ratio"] = row["cold_protocol_NDCG@10"] / row["standard_protocol_NDCG@10"]
                row["standard_run"] = rel(out / f"standard-llm-{scheme}")
        known_check[m] = row
    return {"data": rel(data_path), "data_name": data.name, "cold_start": {
        k: v for k, v in data.cold_start.items() if k != "new_items"}, "num_users": data.num_users,
        "num_items": data.num_items, "users": int(len(users)), "records": records, "comparison": comparison,
        "known_item_check": known_check, "not_run": {s: WHY_NOT[s] for s in WHY_NOT}, "not_trained": skipped,
        "wall_s": round(time.time() - t0, 1)}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generative_rec.evaluation.slices import HISTORY_BUCKETS, bucket_name

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.4), squeeze=False)
    for ax, res in zip(axes[0], results.values(), strict=True):
        labels = [bucket_name(lo, hi) for lo, hi in HISTORY_BUCKETS]
        for m, r in res["records"].items():
            sl = r["slices"]
            xs = [i for i, b in enumerate(labels) if sl[b]["users"] > 0]
            llm = m.startswith("llm")
            ax.plot(xs, [sl[labels[i]]["NDCG@10"] for i in xs], marker="*" if llm else "o",
                    linewidth=2.5 if llm else 1.2, markersize=10 if llm else 5, label=m)
        first = next(iter(res["records"].values()))["slices"]
        ax.set_xticks(range(len(labels)), [f"{b[8:]}\n({first[b]['users']} users)" for b in labels])
        ax.set_xlabel("history length (items the model may see)")
        ax.set_ylabel("NDCG@10 (full ranking)")
        ax.set_title(f"{res['data_name']}, cold-start protocol")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_prior(results: dict, path: Path) -> bool:
    """NDCG@10 on new-item vs known-item targets as beta varies (test users, for reading only; each rule's
    beta was chosen on validation users), one panel per data set with a prior; False when none has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(res, {m: r for m, r in res["records"].items() if "test_curve" in r}) for res in results.values()]
    panels = [(res, recs) for res, recs in panels if recs]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.4), squeeze=False)
    for ax, (res, recs) in zip(axes[0], panels, strict=True):
        drawn = set()
        for m, r in recs.items():
            base = m.split("+")[0]
            curve = r["test_curve"]
            betas = sorted(curve, key=float)
            if base not in drawn:
                ax.plot([curve[b]["known target"] for b in betas], [curve[b]["new target"] for b in betas],
                        marker=".", label=f"{base}, beta 0..{float(betas[-1]):g}")
                drawn.add(base)
            c = curve[str(r["beta"])]
            ax.scatter([c["known target"]], [c["new target"]], s=90, zorder=3,
                       label=f"{m}: beta {r['beta']:g} (chosen on validation)")
        per_model = res["comparison"]["per_model_NDCG@10"]
        others = {m: v for m, v in per_model.items() if not m.startswith("llm-")}
        best = max(others, key=others.get)
        ax.axhline(others[best], color="grey", linestyle="--", label=f"best other model on new targets ({best})")
        ax.set_xlabel("NDCG@10, known-item targets")
        ax.set_ylabel("NDCG@10, new-item targets")
        ax.set_title(f"{res['data_name']}: new-item prior, test users")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def render(results: dict, command: str, commit: str) -> str:
    from generative_rec.benchmark.tables import slices_table
    from generative_rec.evaluation.run import machine

    lines = ["# Cold start: new items and short histories", "",
             "Protocol (`genrec prepare --new-items 0.1`, docs/evaluation.md): a seeded 10 % of the catalogue "
             "loses every training interaction; those items stay in the catalogue with their text and appear "
             "only as validation / test targets. Leave-one-out test split, full ranking over the whole catalogue, "
             "history masked, the same users for every model; baselines tuned on validation NDCG@10 (CPU tier "
             "grids); each LLM is the CPU tier's run config with that ID scheme.", ""]
    for res in results.values():
        c, cs = res["comparison"], res["cold_start"]
        lines += [f"## {res['data_name']}", "",
                  f"{res['num_items']} items ({cs['num_new_items']} drawn as new), {res['users']} test users, "
                  f"{c['users']} of them with a new target ({cs['test_targets_new']} of the drawn items, the rest "
                  f"items that occur only as targets anyway); {cs['removed_interactions']} training "
                  f"interactions removed, {cs['dropped_users']} users dropped (too short).", "",
                  "NDCG@10 by kind of user (users in brackets):", "", slices_table(res["records"]), "",
                  f"**New-item targets** ({c['users']} users, full ranking): best LLM `{c['best_llm']}` "
                  f"{c['llm_NDCG@10']:.4f} vs best other model `{c['best_baseline']}` "
                  f"{c['best_baseline_NDCG@10']:.4f}, ratio {c['ratio']:.2f}; paired over {c['paired']['n']} users: "
                  f"mean diff {c['paired']['mean_diff']:+.4f}, t-test p={c['paired']['t_pvalue']:.3g}, "
                  f"Wilcoxon p={c['paired']['wilcoxon_pvalue']:.3g}.", ""]
        if res.get("not_trained"):
            lines += [f"Not trained for this data set in this run (CPU time): "
                      f"{', '.join('`llm-' + x + '`' for x in res['not_trained'])}.", ""]
        for m, k in res["known_item_check"].items():
            s = f"**Known-item targets**, `{m}`: {k['cold_protocol_NDCG@10']:.4f} on {k['users']} users"
            if "ratio" in k:
                s += (f"; the standard-protocol LLM (`{k['standard_run']}`) on the same users "
                      f"{k['standard_protocol_NDCG@10']:.4f}: ratio {k['ratio']:.2f}")
            lines += [s + ".", ""]
        priors = {m: r for m, r in res["records"].items() if "beta" in r}
        if priors:
            lines += ["**New-item prior** (`generative_rec/evaluation/new_item_prior.py`): the LLM's top-10 merged "
                      "with its own top-10 among the new items, each new item's score raised by `beta` nats, "
                      f"`beta` chosen on all {next(iter(priors.values()))['valid_users']} validation users:", ""]
            lines += [f"- `{m}`: beta {r['beta']:g} ({r['rule']})." for m, r in priors.items()]
            first = next(iter(priors.values()))
            shown = [b for b in sorted(first["test_curve"], key=float) if float(b) in (0, 0.5, 1, 1.5, 2, 3, 4, 6, 8)]
            lines += ["", "The trade-off on the test users (read only; no beta was chosen on them):", "",
                      "| beta | all users | new-item targets | known-item targets |", "|---:|---:|---:|---:|"]
            lines += [f"| {float(b):g} | {first['test_curve'][b]['all']:.4f} | {first['test_curve'][b]['new target']:.4f} "
                      f"| {first['test_curve'][b]['known target']:.4f} |" for b in shown]
            lines += ["", "![the prior's trade-off](cold_start_prior.png)", ""]
        lines += ["Seconds per model (fit / eval, new-only ranking): " + "; ".join(
            f"{m} {r.get('fit_s') or 0:.0f} / {r.get('eval_s') or 0:.0f}, {r.get('new_only', {}).get('seconds', 0):.0f}"
            for m, r in res["records"].items()) + ".", ""]
    lines += ["![NDCG@10 by history length](cold_start.png)", "",
              "## Schemes that cannot express a new item", ""]
    lines += [f"- `{s}`: {why}." for s, why in WHY_NOT.items()]
    lines += ["- `atomic` can, through its text: training never makes a new item a target, so after training "
              "its LM-head row is replaced by one predicted from its text (a ridge map from text embeddings to the "
              "trained rows of the known items, `generative_rec/cold_items.py`, on by default: `model.cold_rows`); "
              "without it the row keeps a start that the popularity start puts last.",
              "- `semantic` shares its code prefixes with items of similar text, so a new item is reachable "
              "through codes the model was trained to produce.",
              "- `title` (IDs are the titles) can express any item, but decoding ~12 tokens per ID is too slow for "
              "this CPU benchmark unless `--schemes` asks for it.", "",
              f"Machine: {machine()}; commit {commit}.", "", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from generative_rec.io import atomic_write_json, atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon"], choices=sorted(DATASETS))
    p.add_argument("--schemes", nargs="+", default=["atomic", "semantic"], choices=["atomic", "semantic", "title"])
    p.add_argument("--standard-schemes", dest="standard_schemes", nargs="*", default=["atomic"],
                   help="schemes also trained under the standard protocol for the known-item check")
    p.add_argument("--prior", nargs="*", default=["atomic", "semantic"],
                   help="schemes also evaluated with the new-item prior (evaluation/new_item_prior.py), beta tuned "
                        "on validation users")
    p.add_argument("--new-items", dest="new_items", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "runs" / "cold-start"))
    p.add_argument("--dest", default=str(ROOT / "bench" / "results"))
    p.add_argument("--no-train", dest="train", action="store_false",
                   help="skip (and report) LLM bundles that are not trained yet instead of training them")
    a = p.parse_args(argv)
    global TRAIN
    TRAIN = a.train
    from generative_rec.evaluation.run import git_commit

    commit = git_commit()  # before any result file is rewritten
    logging.basicConfig(level=logging.WARNING)
    results = {ds: run_dataset(ds, a.schemes, a.standard_schemes, a.new_items, a.seed, Path(a.work), a.prior)
               for ds in a.datasets}
    dest = Path(a.dest)
    command = " ".join(["python bench/cold_start.py", *(sys.argv[1:] if argv is None else argv)])
    plot(results, dest / "cold_start.png")
    plot_prior(results, dest / "cold_start_prior.png")
    atomic_write_json(dest / "cold_start.json", {"command": command, "datasets": results})
    atomic_write_text(dest / "cold_start.md", render(results, command, commit))
    print((dest / "cold_start.md").read_text())


if __name__ == "__main__":
    main()
