"""Which text -> row predictor gives new items the best chance? -> bench/results/cold_rows.{md,json}

    python bench/cold_start.py --datasets ml-100k amazon --schemes atomic   # data, baselines, llm-atomic
    python bench/cold_rows.py                                               # ML-100K and Amazon

With one token per item (``atomic`` IDs), an item that training never saw is ranked by the LM-head row that
``model.cold_rows`` writes for it (generative_rec/cold_items.py: a ridge regression from the item's text
embedding to the trained rows). The cold-start benchmark shows that these items then lose to content kNN on
new-item targets. This ablation asks whether a different predictor of the row changes that, holding
everything else fixed: the same cold-start bundle (``<work>/<data>/llm-atomic``), its trained rows for the
known items, the same text features, and the same validation-only rules for the new-item prior
(evaluation/new_item_prior.py, ``PRIOR_RULES`` of bench/cold_start.py).

Predictors of a new item's row:

- ``ridge`` — what training writes (:func:`generative_rec.cold_items.fit_ridge`);
- ``neighbours K/t`` — the softmax(cos / t)-weighted mean of the trained rows of the item's K nearest known
  items in text space (a local instead of a global map: rows of similar items carry their users and their
  popularity). ``neighbours*`` is the (K, t) with the best held-out cosine between predicted and trained
  rows on a seeded tenth of the known items (the same kind of rule that chooses ridge's penalty); the others
  are shown for the spread.

Bundles (``--bundles``; trained with the CPU tier's run config when missing): ``llm-atomic`` (bench/cold_start.py's)
and ``llm-atomic-textrows``, the same with ``model.text_rows: 0.1`` (generative_rec/text_rows.py: rows tied to the
item text during training, with free-row dropout); ``as trained`` ranks with each bundle's own rows.

Scoring is exact and fast: for one-token IDs the constrained top-K is the top-K of the item tokens' logits,
so each user's final hidden state (one forward pass, cached in ``<work>/<data>/cold-rows/states.npz``) times
the rows ranks the whole catalogue; with the bundle's own rows this reproduces the cold-start benchmark's
numbers. Each predictor's beta is chosen on all validation users; the test users are only read. The paired
bootstrap interval compares each LLM variant with content kNN on the test users whose target is new.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold_start import PRIOR_RULES, prepare_cold, rel, train_bundle  # noqa: E402

DATA = {"ml-100k": "ml-100k", "amazon": "amazon-mi"}  # --datasets name -> folder under <work>
# Bundles compared (folder under <work>/<data>) -> extra `--set` overrides of the CPU tier's run config.
# llm-atomic is bench/cold_start.py's; llm-atomic-textrows ties item rows to text during training (text_rows.py).
BUNDLES = {"llm-atomic": (), "llm-atomic-textrows": ("model.text_rows=0.1",)}
NEIGHBOURS = [(k, t) for k in (5, 20, 100) for t in (0.1, 1.0)]
OFF = -1e9  # beta that switches new items off: the reference for the known-item loss
BETAS = [OFF, *np.round(np.arange(-6.0, 8.001, 0.25), 2)]
K = 10


def user_states(bundle, data, split: str, batch_size: int = 32, model=None) -> tuple[np.ndarray, np.ndarray]:
    """``[num_users, hidden]``: the input of the LM head at the last prompt position for every user's
    ``split`` history (the state that scores every item token), from the bundle's merged model (``model``:
    already loaded), and the LM head's weight."""
    import torch
    from tqdm.auto import tqdm

    from generative_rec.bundle import load_bundle_model
    from generative_rec.decoding.hf import left_pad

    model = model if model is not None else load_bundle_model(bundle)
    tpl, mh = bundle.template(None), bundle.manifest.get("max_history")
    prompts = [bundle.renderer.prompt_ids(tpl, data.history(u, split)[-mh:] if mh else data.history(u, split))
               for u in range(data.num_users)]
    grab: dict = {}
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: grab.__setitem__("h", i[0][:, -1]))
    out = np.zeros((len(prompts), model.get_output_embeddings().in_features), dtype=np.float32)
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    try:
        for lo in tqdm(range(0, len(order), batch_size), desc=f"{split} states", dynamic_ncols=True):
            idx = order[lo: lo + batch_size]
            ids, att = left_pad([prompts[i] for i in idx], bundle.tokenizer.pad_token_id)
            with torch.inference_mode():
                model(input_ids=ids.to(model.device), attention_mask=att.to(model.device), logits_to_keep=1)
            out[idx] = grab["h"].float().cpu().numpy()
    finally:
        hook.remove()
    rows = model.get_output_embeddings().weight.detach().float().cpu().numpy()
    return out, rows


def load_states(bundle, data, path: Path) -> dict[str, np.ndarray]:
    from generative_rec.io import atomic_write_bytes

    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from generative_rec.bundle import load_bundle_model

    model = load_bundle_model(bundle)
    hv, head = user_states(bundle, data, "valid", model=model)
    ht, _ = user_states(bundle, data, "test", model=model)
    tokens = np.asarray([bundle.trie.sequence(i)[0] for i in range(bundle.num_items)])
    res = {"valid": hv, "test": ht, "rows": head[tokens]}
    buf = io.BytesIO()
    np.savez(buf, **res)
    atomic_write_bytes(path, buf.getvalue())
    return res


def neighbour_rows(feats: np.ndarray, rows: np.ndarray, fit: np.ndarray, target: np.ndarray, k: int, t: float):
    """Rows of ``target`` items: the softmax(cos / t)-weighted mean of the ``rows`` of their ``k`` nearest
    ``fit`` items by cosine of the centred text features."""
    x = feats - feats[fit].mean(0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x[target] @ x[fit].T
    k = min(k, len(fit))
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sim, idx, 1) / t
    w = np.exp(s - s.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return np.einsum("nk,nkd->nd", w, rows[fit][idx])


def held_out_cosine(feats, rows, known: np.ndarray, k: int, t: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.flatnonzero(known))
    out, fit = order[: max(1, len(order) // 10)], order[max(1, len(order) // 10):]
    centre = rows[fit].mean(0)
    pred = neighbour_rows(feats, rows, fit, out, k, t) - centre
    true = rows[out] - centre
    cos = (pred * true).sum(1) / np.maximum(np.linalg.norm(pred, axis=1) * np.linalg.norm(true, axis=1), 1e-12)
    return float(cos.mean())


def scores(states: np.ndarray, rows: np.ndarray, hists) -> np.ndarray:
    """``[users, items]`` item-token logits, every user's history masked (``-inf``)."""
    lg = states.astype(np.float64) @ rows.T.astype(np.float64)
    for u, h in enumerate(hists):
        lg[u, h] = -np.inf
    return lg


def evaluate(lg: np.ndarray, new: np.ndarray, targets: np.ndarray, betas) -> dict[float, dict[str, np.ndarray]]:
    """Per beta (added to every new item's logit): per-user NDCG@10 of the target over the full catalogue
    (``full``) and among the new items only (``among``)."""
    from generative_rec.evaluation.metrics import ndcg

    rows = np.arange(len(targets))
    out = {}
    for b in betas:
        shifted = lg.copy()
        shifted[:, new] += float(b)
        tgt = shifted[rows, targets][:, None]
        full = (shifted > tgt).sum(1) + 1  # 1-based ranks
        among = (np.where(new[None, :], shifted, -np.inf) > tgt).sum(1) + 1
        out[float(b)] = {"full": ndcg(full, K), "among": ndcg(among, K)}
    return out


def choose_beta(curve: dict, is_new_target: np.ndarray, max_known_loss: float | None) -> float:
    """bench/cold_start.py's PRIOR_RULES on validation: best overall NDCG@10, or best new-target NDCG@10 with
    known targets within ``max_known_loss`` of the model with new items switched off (``OFF``)."""
    base = curve[OFF]["full"][~is_new_target].mean()
    ok = [b for b, c in curve.items()
          if b != OFF and (max_known_loss is None or c["full"][~is_new_target].mean() >= (1 - max_known_loss) * base)]
    key = (lambda b: curve[b]["full"].mean()) if max_known_loss is None else (lambda b: curve[b]["full"][is_new_target].mean())
    return max(ok, key=lambda b: (round(float(key(b)), 12), -b))


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    d = a - b
    idx = rng.integers(0, len(d), size=(n, len(d)))
    boots = d[idx].mean(1)
    return float(d.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def run_dataset(name: str, work: Path, bundles: list[str], fraction: float, seed: int) -> dict:
    data_path = prepare_cold(name, fraction, seed)
    out = {}
    for b in bundles:
        path = train_bundle(data_path, "atomic", work / DATA[name] / b, BUNDLES[b])
        out[b] = run_bundle(name, work, path, data_path)
    return out


def run_bundle(name: str, work: Path, bundle_path: Path, data_path: Path) -> dict:
    from generative_rec.bundle import Bundle
    from generative_rec.cold_items import fit_ridge
    from generative_rec.data import RecData
    from generative_rec.embeddings import embed_texts
    from generative_rec.modeling import resolve_model

    folder = DATA[name]
    bundle = Bundle(bundle_path, catalogue_version=0)
    data = RecData(data_path)
    baselines = work / folder / "baselines" / "per_user.npz"
    if not baselines.exists():
        raise SystemExit(f"{baselines} is missing: run `python bench/cold_start.py --datasets {name} --schemes atomic` first")
    per_user = np.load(baselines)
    if not np.array_equal(per_user["users"], np.arange(data.num_users)):
        raise SystemExit("the baselines' per-user file does not cover every test user in order")
    t0 = time.time()
    st = load_states(bundle, data, work / folder / "cold-rows" / f"{bundle_path.name}-states.npz")
    state_s = round(time.time() - t0, 1)
    new = data.new_items
    known = ~new
    feats = embed_texts(data.texts, encoder="llm", model_path=resolve_model(bundle.manifest["base_model"]))
    trained_rows = st["rows"].astype(np.float64)

    predictors: dict[str, tuple[np.ndarray, dict]] = {"as trained": (trained_rows, {})}
    w, xm, ym, info = fit_ridge(feats[known], trained_rows[known])
    r = trained_rows.copy()
    r[new] = (feats[new] - xm) @ w + ym
    predictors["ridge"] = (r, {"penalty": info["penalty"], "held_out_r2": info["held_out_r2"]})
    cosines = {f"{k}/{t:g}": held_out_cosine(feats, trained_rows, known, k, t) for k, t in NEIGHBOURS}
    best = max(NEIGHBOURS, key=lambda kt: cosines[f"{kt[0]}/{kt[1]:g}"])
    for k, t in NEIGHBOURS:
        r = trained_rows.copy()
        r[new] = neighbour_rows(feats, trained_rows, np.flatnonzero(known), np.flatnonzero(new), k, t)
        label = f"neighbours {k}/{t:g}" + ("*" if (k, t) == best else "")
        predictors[label] = (r, {"k": k, "t": t, "held_out_cosine": round(cosines[f"{k}/{t:g}"], 4)})

    hv = [data.history(u, "valid") for u in range(data.num_users)]
    ht = [data.history(u, "test") for u in range(data.num_users)]
    yv = np.asarray([e.target for e in data.examples("valid")])
    yt = np.asarray([e.target for e in data.examples("test")])
    nv, nt = new[yv], new[yt]
    ck = per_user["content_knn/NDCG@10"]
    rows_out = {}
    for label, (rows, params) in predictors.items():
        cv = evaluate(scores(st["valid"], rows, hv), new, yv, BETAS)
        ct = evaluate(scores(st["test"], rows, ht), new, yt, BETAS)
        if label == "as trained":
            off = ct[OFF]["full"]  # new items switched off: the same for every predictor
        rec = {"params": params, "test_among_new_NDCG@10": round(float(ct[0.0]["among"][nt].mean()), 4)}
        for suffix, max_loss in PRIOR_RULES.items():
            b = choose_beta(cv, nv, max_loss)
            full = ct[b]["full"]
            diff = bootstrap_diff(full[nt], ck[nt])
            rec[suffix] = {"beta": b, "new_NDCG@10": round(float(full[nt].mean()), 4),
                           "known_NDCG@10": round(float(full[~nt].mean()), 4), "all_NDCG@10": round(float(full.mean()), 4),
                           "valid_new_NDCG@10": round(float(cv[b]["full"][nv].mean()), 4),
                           "vs_content_knn_new": {"mean_diff": round(diff[0], 4), "ci95": [round(diff[1], 4), round(diff[2], 4)]}}
        rows_out[label] = rec
        print(f"{name} {bundle_path.name} {label}: " + ", ".join(f"{s} beta {rec[s]['beta']:g} new {rec[s]['new_NDCG@10']} known "
                                              f"{rec[s]['known_NDCG@10']}" for s in PRIOR_RULES), flush=True)
    return {"data_name": data.name, "bundle": rel(bundle_path), "text_rows": bundle.metrics.get("train", {}).get("text_rows"), "test_users": int(data.num_users),
            "new_target_test_users": int(nt.sum()), "new_target_valid_users": int(nv.sum()),
            "content_knn": {"new_NDCG@10": round(float(ck[nt].mean()), 4), "known_NDCG@10": round(float(ck[~nt].mean()), 4)},
            "llm_new_items_off": {"known_NDCG@10": round(float(off[~nt].mean()), 4)},
            "state_seconds": state_s, "predictors": rows_out}


def render(results: dict, command: str, commit: str, machine: str) -> str:
    lines = ["# New items in the atomic-ID LLM: text -> row predictors and text-tied rows (cold-start protocol)", "",
             f"`{command}` — {machine}; commit {commit}. See the module docstring of `bench/cold_rows.py`. Per bundle, "
             "`as trained` ranks with the bundle's own rows; every other predictor keeps the trained rows of known items "
             "and replaces only the new items' rows. Beta is chosen on validation users by each rule of "
             "`bench/cold_start.py`; test users are only read. NDCG@10 over the full catalogue; `known` = users whose "
             "target is a known item; the interval is a paired bootstrap (95 %) of LLM minus content kNN on new-target "
             "users.", ""]
    for bundles in results.values():
        first = next(iter(bundles.values()))
        ck = first["content_knn"]
        lines += [f"## {first['data_name']}", "",
                  f"{first['new_target_test_users']} of {first['test_users']} test users have a new target "
                  f"({first['new_target_valid_users']} in validation). Content kNN: new {ck['new_NDCG@10']:.4f}, known "
                  f"{ck['known_NDCG@10']:.4f}.", ""]
        for name, res in bundles.items():
            lines += [f"### `{name}`", "", f"Bundle `{res['bundle']}`; text rows: {res['text_rows']}. With new items "
                      f"switched off its known-target NDCG@10 is {res['llm_new_items_off']['known_NDCG@10']:.4f}.", "",
                      "| predictor | among new | rule | beta | new | known | LLM − content kNN on new (95 % CI) |",
                      "|---|---|---|---|---|---|---|"]
            for label, rec in res["predictors"].items():
                for suffix in PRIOR_RULES:
                    r = rec[suffix]
                    d = r["vs_content_knn_new"]
                    lines.append(f"| {label} | {rec['test_among_new_NDCG@10']:.4f} | {suffix} | {r['beta']:g} | "
                                 f"{r['new_NDCG@10']:.4f} | {r['known_NDCG@10']:.4f} | {d['mean_diff']:+.4f} "
                                 f"({d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f}) |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from generative_rec.evaluation.run import git_commit, machine
    from generative_rec.io import atomic_write_json, atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon"], choices=sorted(DATA))
    p.add_argument("--bundles", nargs="+", default=list(BUNDLES), choices=list(BUNDLES),
                   help="bundles to compare (trained with the CPU tier's config when missing)")
    p.add_argument("--new-items", dest="new_items", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "runs" / "cold-start"))
    p.add_argument("--dest", default=str(ROOT / "bench" / "results"))
    a = p.parse_args(argv)
    commit = git_commit()  # before any result file is rewritten
    results = {ds: run_dataset(ds, Path(a.work), a.bundles, a.new_items, a.seed) for ds in a.datasets}
    command = " ".join(["python bench/cold_rows.py", *(sys.argv[1:] if argv is None else argv)])
    dest = Path(a.dest)
    atomic_write_json(dest / "cold_rows.json", {"command": command, "commit": commit, "machine": machine(),
                                                "datasets": results})
    atomic_write_text(dest / "cold_rows.md", render(results, command, commit, machine()))
    print((dest / "cold_rows.md").read_text())


if __name__ == "__main__":
    main()
