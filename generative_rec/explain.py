"""Explanations of recommendations: prompts, generation with an HF model, and their evaluation.

The contract every runtime (HF here; vLLM in serving and batch generation) follows:

- the prompt is :func:`explain_prompt_ids` — token ids, rendered segment by segment exactly as in training
  (send ids, not text: re-tokenising the decoded prompt would change item IDs and segment boundaries);
- the template is :func:`explain_template`: the first ``explain`` template the bundle was *trained* on
  (``bundle.json`` ``trained_templates``), unless a key is given. Every bundle *carries* the explain templates
  (bundles store all templates, held-out ones included), so "can this bundle explain?" is
  :func:`explanations_trained`, not "has an explain template";
- decoding (:class:`ExplainSettings`): greedy, at most ``max_new_tokens`` (64) new tokens, stop at EOS, the
  scheme's item-ID tokens suppressed (an explanation is text; vLLM: ``logit_bias={t: -100}``), and the
  result passed through :func:`clean_explanation` (first non-empty line, whitespace collapsed).

Evaluation (:func:`evaluate_bundle_explanations`) explains, for each sampled user of a split, two items:

- ``target``: the held-out item of the split. Its reference is the user's own review sentence of it (where
  the data has reviews), so BLEU-4 / ROUGE-L are computed here (P5 / PETER protocol), plus faithfulness;
- ``top1``: the bundle's own top-1 recommendation (trie-constrained beam search, history masked) — what a
  served explanation is about; faithfulness only (there is no reference text for it).

Besides the per-explanation rates of :mod:`~generative_rec.evaluation.explain_metrics`, :func:`claim_stats`
gives the claim-level view: titles named and attributes claimed per explanation and the share supported —
a model that says nothing checkable has a low hallucination rate but also cites nothing.

A third row, ``reference``, scores the ground-truth reasons with the same checks: on MovieLens the templated
reasons are faithful by construction (0 hallucinations; an upper bound for citation), on Amazon it shows how
often real review sentences trip the title/attribute matchers (mined titles and keyword attributes are
generic phrases), i.e. the noise floor of those measures on that data.

Faithfulness is checked against the history the model was *shown* (the last ``max_history`` items).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import yaml

from generative_rec.errors import ConfigError
from generative_rec.evaluation.explain_metrics import (
    MOVIELENS_GENRE_ALIASES,
    Catalogue,
    explanation_report,
    faithfulness,
)
from generative_rec.explain_targets import history_target
from generative_rec.prompts import Template
from generative_rec.tasks.explain import DEFAULTS as TASK_DEFAULTS
from generative_rec.tasks.explain import VERBS, explain_options, review_reason

log = logging.getLogger(__name__)

TASK = "explain"
MAX_NEW_TOKENS = 64


# --------------------------------------------------------------------------- templates and prompts
def trained_explain_templates(bundle) -> list[Template]:
    """The ``explain`` templates the bundle was fine-tuned on (training order): the task must be in the run's
    mixture (``config.yaml`` ``prompts.tasks``, weight > 0) and the template among ``trained_templates``."""
    if not (_run_config(bundle).get("prompts") or {}).get("tasks", {}).get(TASK):
        return []
    trained = bundle.manifest.get("trained_templates", [])
    return [bundle.templates[k] for k in trained if k in bundle.templates and bundle.templates[k].task == TASK]


def explanations_trained(bundle) -> bool:
    """Whether the bundle was trained with the ``explain`` task (what serving should require)."""
    return bool(trained_explain_templates(bundle))


def heldout_explain_template(bundle) -> Template:
    for t in bundle.templates.values():
        if t.task == TASK and t.heldout:
            return t
    raise ConfigError(f"{bundle.path} carries no held-out explain template")


def explain_template(bundle, key: str | None = None) -> Template:
    """Template ``key`` (``explain/<name>`` or ``<name>``), else the first trained explain template.

    Raises :class:`ConfigError` when no key is given and the bundle was not trained to explain.
    """
    if key is not None:
        full = key if "/" in key else f"{TASK}/{key}"
        t = bundle.templates.get(full)
        if t is None or t.task != TASK:
            have = sorted(k for k, v in bundle.templates.items() if v.task == TASK)
            raise ConfigError(f"unknown explain template {key!r}; the bundle has {have}")
        return t
    trained = trained_explain_templates(bundle)
    if not trained:
        raise ConfigError(f"{bundle.path} was not trained with the explain task (add `explain` to prompts.tasks); "
                          f"pass a template key to prompt it anyway")
    return trained[0]


def _run_config(bundle) -> dict:
    p = bundle.path / "config.yaml"
    return (yaml.safe_load(p.read_text(encoding="utf-8")) if p.exists() else None) or {}


def _task_options(bundle) -> dict:
    return ((_run_config(bundle).get("prompts") or {}).get("task_options") or {}).get(TASK) or {}


@dataclass(frozen=True)
class ExplainSettings:
    """How to prompt and decode an explanation (the same for HF, vLLM and batch generation)."""

    template: str  # explain template key
    max_new_tokens: int = MAX_NEW_TOKENS
    max_history: int = TASK_DEFAULTS["max_history"]  # most recent history items shown in the prompt
    eos_token_id: int | None = None  # stop token
    suppress_token_ids: tuple[int, ...] = ()  # the ID scheme's added tokens: never in an explanation
    greedy: bool = True


def _max_history(bundle) -> int:
    return int(explain_options(_task_options(bundle))["max_history"])


def explain_settings(bundle, max_new_tokens: int = MAX_NEW_TOKENS, template: str | None = None) -> ExplainSettings:
    """Prompting and decoding settings of ``bundle``: the template (:func:`explain_template`: raises when the
    bundle was not trained to explain and no key is given), the history length from the explain task options it
    was trained with, EOS and the item-ID tokens to suppress. Compute once per bundle (serving: at start-up)."""
    t = explain_template(bundle, template)
    tok = bundle.tokenizer
    new = tuple(int(x) for x in tok.convert_tokens_to_ids(list(bundle.index.new_tokens))) if bundle.index.new_tokens else ()
    return ExplainSettings(t.key, max_new_tokens, _max_history(bundle), tok.eos_token_id, new)


def vllm_sampling_kwargs(s: ExplainSettings) -> dict:
    """``vllm.SamplingParams(**kwargs)`` (or the same keys in an OpenAI ``/v1/completions`` body, with the prompt
    sent as token ids) for :class:`ExplainSettings`; apply :func:`clean_explanation` to the text."""
    return {"max_tokens": s.max_new_tokens, "temperature": 0.0,
            "stop_token_ids": [s.eos_token_id] if s.eos_token_id is not None else [],
            "logit_bias": {int(t): -100.0 for t in s.suppress_token_ids}}


def explain_prompt_ids(bundle, history_rows: Sequence[int], item_row: int, template: str | Template | None = None,
                       max_history: int | None = None) -> list[int]:
    """The prompt (token ids, BOS included) asking why ``item_row`` is recommended after ``history_rows``.

    Rows are catalogue indices (``bundle.lookup``); only the last ``max_history`` history items are shown
    (default: the bundle's explain ``max_history``). ``template``: a key or :class:`Template` (default: the
    first trained explain template). Generation continues with the explanation.
    """
    t = template if isinstance(template, Template) else explain_template(bundle, template)
    n = max_history if max_history is not None else _max_history(bundle)
    shown = [int(h) for h in history_rows][-n:] if n > 0 else []
    return bundle.renderer.item_prompt_ids(t, int(item_row), history=shown)


def clean_explanation(text: str) -> str:
    """The first non-empty line, whitespace collapsed (explanations are one line)."""
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


# --------------------------------------------------------------------------- generation (HF)
@torch.inference_mode()
def generate_explanations(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int = MAX_NEW_TOKENS,
                          batch_size: int = 8, suppress_token_ids: Sequence[int] = (), eos_token_id: int | None = None,
                          progress: bool = False) -> list[str]:
    """Greedy explanations for token-id prompts, batched (left padding, longest first), stop at EOS."""
    from tqdm.auto import tqdm

    from generative_rec.decoding.hf import left_pad

    if not prompts:
        return []
    eos = eos_token_id if eos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = [""] * len(prompts)
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    kwargs = {"suppress_tokens": list(suppress_token_ids)} if len(suppress_token_ids) else {}
    bar = tqdm(total=len(prompts), desc="explain", disable=not progress, dynamic_ncols=True)
    for lo in range(0, len(order), batch_size):
        idx = order[lo: lo + batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], pad)
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad, temperature=None,
                             top_p=None, top_k=None, **kwargs)
        for row, i in enumerate(idx):
            out[i] = clean_explanation(tokenizer.decode(gen[row, ids.shape[1]:], skip_special_tokens=True))
        bar.update(len(idx))
    bar.close()
    if was_training:
        model.train()
    return out


def explain_items(bundle, model, history_rows: Sequence[int], items: Sequence[int], template: str | None = None,
                  settings: ExplainSettings | None = None, batch_size: int = 8) -> list[str]:
    """One explanation per recommended item for one history (the HF reference of what serving returns)."""
    s = settings or explain_settings(bundle, template=template)
    t = explain_template(bundle, s.template)
    prompts = [explain_prompt_ids(bundle, history_rows, i, t, s.max_history) for i in items]
    return generate_explanations(model, bundle.tokenizer, prompts, s.max_new_tokens, batch_size, s.suppress_token_ids,
                                 s.eos_token_id)


# --------------------------------------------------------------------------- evaluation
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
    from generative_rec.evaluation.llm import llm_topk
    from generative_rec.evaluation.run import load_bundle_model

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
        top, _ = llm_topk(model, bundle.renderer, bundle.trie, [e.history for e in examples], bundle.template(), 1,
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
