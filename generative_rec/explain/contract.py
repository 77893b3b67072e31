"""The explanation contract: template, prompt, decoding settings, clean-up (HF, vLLM and batch alike).

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

Also the explain task's options (:data:`DEFAULTS`, :func:`explain_options`): the history length a bundle
was trained with is the one its prompts show. No torch, no data readers: the server imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from generative_rec.errors import ConfigError
from generative_rec.prompts import Template

TASK = "explain"
MAX_NEW_TOKENS = 64
DEFAULTS = {"max_history": 10, "min_history": 1, "max_cited": 2, "source": "auto", "verb": None}
VERBS = {"movie": "watched", "book": "read", "product": "bought", "song": "listened to"}


def explain_options(options: dict | None) -> dict:
    """``prompts.task_options.explain`` merged over :data:`DEFAULTS` (unknown keys are errors)."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"prompts.task_options.explain: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **opts}
    if opts["source"] not in ("auto", "review", "history"):
        raise ConfigError(f"prompts.task_options.explain.source must be auto, review or history, not {opts['source']!r}")
    return opts


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
    max_history: int = DEFAULTS["max_history"]  # most recent history items shown in the prompt
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
