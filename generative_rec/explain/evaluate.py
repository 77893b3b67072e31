"""Evaluation of explanations.

Evaluation (:func:`evaluate_bundle_explanations`) explains, for each sampled user of a split, two items:

- ``target``: the held-out item of the split. Its reference is the user's own review sentence of it (where
  the data has reviews), so BLEU-4 / ROUGE-L are computed here (P5 / PETER protocol), plus faithfulness;
- ``top1``: the bundle's own top-1 recommendation (trie-constrained beam search, history masked) — what a
  served explanation is about; faithfulness only (there is no reference text for it).

Besides the per-explanation rates of :mod:`~generative_rec.explain.metrics`, :func:`claim_stats`
gives the claim-level view: titles named and attributes claimed per explanation and the share supported —
a model that says nothing checkable has a low hallucination rate but also cites nothing.

A third row, ``reference``, scores the ground-truth reasons with the same checks: on MovieLens the templated
reasons are faithful by construction (0 hallucinations; an upper bound for citation), on Amazon it shows how
often real review sentences trip the title/attribute matchers (mined titles and keyword attributes are
generic phrases), i.e. the noise floor of those measures on that data.

Faithfulness is checked against the history the model was *shown* (the last ``max_history`` items).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import torch

from generative_rec.explain.contract import (
    MAX_NEW_TOKENS,
    VERBS,
    explain_settings,
    explain_template,
    explanations_trained,
    heldout_explain_template,
)
from generative_rec.explain.hf import generate_explanations
from generative_rec.explain.metrics import (
    MOVIELENS_GENRE_ALIASES,
    Catalogue,
    explanation_report,
    faithfulness,
)
from generative_rec.explain.targets import history_target, review_reason
from generative_rec.prompts import Template


def explanation_catalogue(titles: Sequence[str], attributes: Sequence[Sequence[str]], domain: str) -> Catalogue:
    """The catalogue faithfulness is checked against (genre aliases for movies)."""
    return Catalogue(list(titles), [list(a) for a in attributes],
                     aliases=MOVIELENS_GENRE_ALIASES if domain == "movie" else {})


def _faith_dict(f) -> dict:
    d = asdict(f)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def claim_stats(results: Sequence) -> dict[str, float]:
    """Claim-level view of :class:`Faithfulness` results (a rate alone rewards saying nothing checkable):
    titles named and attributes claimed per explanation, and the share of each that is supported (micro)."""
    n = max(len(results), 1)
    good_t = sum(len(f.cited_history) + f.names_recommended for f in results)
    all_t = good_t + sum(len(f.hallucinated_items) for f in results)
    all_a = sum(len(f.claimed_attributes) for f in results)
    good_a = all_a - sum(len(f.hallucinated_attributes) for f in results)
    out = {"names_item_rate": sum(f.names_recommended for f in results) / n, "titles_per_explanation": all_t / n,
           "attributes_per_explanation": all_a / n}
    if all_t:
        out["title_precision"] = good_t / all_t
    if all_a:
        out["attribute_precision"] = good_a / all_a
    return out


def _lengths(texts: Sequence[str]) -> dict[str, float]:
    n = max(len(texts), 1)
    return {"mean_words": sum(len(t.split()) for t in texts) / n, "empty_rate": sum(not t for t in texts) / n}


def evaluate_bundle_explanations(bundle, data, split: str = "test", users: Sequence[int] | None = None, n: int = 20,
                                 seed: int = 0, model=None, template: str | None = None, num_beams: int = 5,
                                 max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 8, n_examples: int = 5,
                                 progress: bool = False,
                                 prompt_fn: Callable[[Template, int, list[int]], list[int]] | None = None) -> dict:
    """Explain the held-out target and the top-1 recommendation of ``n`` sampled users (or ``users``).

    ``template``: an explain template key; default the bundle's serving one (first trained), or the held-out
    one when the bundle was never trained to explain (a model prompted zero-shot). ``prompt_fn(template, item,
    shown_history) -> ids`` replaces the rendered prompt (e.g. wrapped in a chat template for a zero-shot
    instruct model). Returns a JSON-able report (see the module docstring); ``target`` carries BLEU-4 /
    ROUGE-L when the data has reviews.
    """
    from generative_rec.bundle import load_bundle_model
    from generative_rec.decoding.hf import rank_histories

    t0 = time.time()
    trained = explanations_trained(bundle)
    tpl = explain_template(bundle, template) if (template or trained) else heldout_explain_template(bundle)
    settings = explain_settings(bundle, max_new_tokens, tpl.key)
    model = model if model is not None else load_bundle_model(bundle)
    sample = np.asarray(users) if users is not None else data.sample_users(n, seed)
    examples = data.examples(split, sample)
    pos = -1 if split == "test" else -2
    shown = [[int(h) for h in e.history[-settings.max_history:]] for e in examples]

    # the bundle's top-1 recommendation (history masked), as served
    max_h = bundle.manifest.get("max_history")
    with torch.inference_mode():
        top, _ = rank_histories(model, bundle.renderer, bundle.trie, [e.history for e in examples], bundle.template(), 1,
                          max_h, max(1, num_beams), exclude=[e.history for e in examples], batch_size=batch_size,
                          pad_id=bundle.tokenizer.pad_token_id, progress=False)
    top1 = [int(x) for x in top[:, 0]]
    targets = [e.target for e in examples]

    has_reviews = "review" in data.user_columns
    domain = bundle.domain
    verb = VERBS.get(domain, "chose")
    refs: list[str | None] = []
    for e, h in zip(examples, shown, strict=True):
        if has_reviews:
            refs.append(review_reason(data, e.user, pos, e.target))
        else:
            refs.append(history_target(h, e.target, data.titles, data.attributes, e.user, noun=domain, verb=verb).text)

    render = prompt_fn or (lambda t, i, h: bundle.renderer.item_prompt_ids(t, i, history=h))
    prompts = [render(tpl, i, h) for h, i in zip(shown * 2, targets + top1, strict=True)]
    texts = generate_explanations(model, bundle.tokenizer, prompts, max_new_tokens, batch_size,
                                  settings.suppress_token_ids, settings.eos_token_id, progress)
    t_target, t_top1 = texts[: len(examples)], texts[len(examples):]

    cat = explanation_catalogue(data.titles, data.attributes, domain)
    f_target = [faithfulness(x, h, i, cat) for x, h, i in zip(t_target, shown, targets, strict=True)]
    f_top1 = [faithfulness(x, h, i, cat) for x, h, i in zip(t_top1, shown, top1, strict=True)]
    f_ref = [faithfulness(r or "", h, i, cat) for r, h, i in zip(refs, shown, targets, strict=True)]
    rep_target = explanation_report(f_target, t_target if has_reviews else None, refs if has_reviews else None)
    rows = []
    for j in range(min(n_examples, len(examples))):
        e = examples[j]
        rows.append({
            "user_id": data.user_ids[e.user], "history": [data.titles[i] for i in shown[j]],
            "target": data.titles[e.target], "target_explanation": t_target[j], "reference": refs[j],
            "target_faithfulness": _faith_dict(f_target[j]),
            "top1": data.titles[top1[j]], "top1_explanation": t_top1[j], "top1_faithfulness": _faith_dict(f_top1[j]),
        })
    return {
        "split": split, "users": len(examples), "user_sample": {"n": None if users is not None else n, "seed": seed},
        "template": tpl.key, "template_heldout": tpl.heldout, "trained": trained, "custom_prompt": prompt_fn is not None,
        "max_history": settings.max_history, "max_new_tokens": max_new_tokens, "has_reviews": has_reviews,
        "target": {**rep_target, **claim_stats(f_target), **_lengths(t_target)},
        "top1": {**explanation_report(f_top1), **claim_stats(f_top1), **_lengths(t_top1)},
        "reference": {**explanation_report(f_ref), **claim_stats(f_ref), **_lengths([r or "" for r in refs])},
        "examples": rows, "seconds": round(time.time() - t0, 1),
        "generated": [{"user_id": data.user_ids[e.user], "target": data.item_ids[e.target], "target_text": a,
                       "top1": data.item_ids[i], "top1_text": b}
                      for e, a, i, b in zip(examples, t_target, top1, t_top1, strict=True)],
    }


REPORT_COLUMNS = [("hallucination_rate", "halluc."), ("item_hallucination_rate", "item halluc."),
                  ("attribute_hallucination_rate", "attr. halluc."), ("citation_rate", "cites history"),
                  ("names_item_rate", "names item"), ("title_precision", "title prec."),
                  ("attributes_per_explanation", "attrs/expl."), ("attribute_precision", "attr. prec."),
                  ("bleu4", "BLEU-4"), ("rouge_l_f", "ROUGE-L F"), ("mean_words", "words"), ("empty_rate", "empty")]


def explanation_table(report: dict) -> str:
    """A Markdown table of the ``target`` / ``top1`` / ``reference`` rows of a report."""
    cols = [(k, h) for k, h in REPORT_COLUMNS if any(k in report[r] for r in ("target", "top1", "reference"))]
    lines = ["| explained item | " + " | ".join(h for _, h in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    names = {"target": "held-out target (generated)", "top1": "top-1 recommendation (generated)",
             "reference": "ground-truth reasons (reference)"}
    for r in ("target", "top1", "reference"):
        vals = [f"{report[r][k]:.3f}" if k in report[r] else "" for k, _ in cols]
        lines.append(f"| {names[r]} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    lines = [f"## Explanations ({report['users']} users, `{report['split']}` split)", "",
             f"Template `{report['template']}`{' (held out)' if report['template_heldout'] else ''}; bundle trained "
             f"with the explain task: {report['trained']}; history shown: last {report['max_history']} items; "
             f"greedy, <= {report['max_new_tokens']} new tokens. Faithfulness is checked against the shown history.",
             "", explanation_table(report), ""]
    for ex in report["examples"][:2]:
        lines += [f"- user {ex['user_id']}: target *{ex['target']}* -> \"{ex['target_explanation']}\" "
                  f"(reference: \"{ex['reference']}\"); top-1 *{ex['top1']}* -> \"{ex['top1_explanation']}\""]
    return "\n".join(lines) + "\n"
