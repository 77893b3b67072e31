"""Domain text: plain causal-LM examples on item descriptions and TRAINING-part reviews (loss on every token).

Units: one per catalogue item with a description, plus one per (user, training position) with a non-empty
review when the data has a ``review`` column (a user's validation and test reviews are never used). Item
units take a template whose target has no {review}/{summary}; review units one that has. Each document is
cut to ``max_tokens`` tokens (option, default 192).

Two ways to use it: mixed into fine-tuning by its weight (``prompts.tasks: {next_item: 1, explain: 1,
domain_text: 0.5}``), or as a stage before it: a run with ``prompts.tasks: {domain_text: 1.0}`` and an ID
scheme that adds no tokens (``sequential``, ``title``), so its merged ``model/`` is a plain LM, then the
fine-tuning run with ``model.base: <stage 1 bundle>/model`` (tested in tests/unit/test_explain_task.py).
"""

from __future__ import annotations

import re

from generative_rec.errors import ConfigError
from generative_rec.tasks.base import register, weighted

DEFAULTS = {"max_tokens": 192, "reviews": True}
_REVIEW_FIELDS = re.compile(r"\{(review|summary)\}")


def is_review_template(t) -> bool:
    return bool(_REVIEW_FIELDS.search(t.prompt + t.target))


@register("domain_text")
def build(ctx, templates, weight, rng):
    data, r = ctx.data, ctx.renderer
    opts = {**DEFAULTS, **(ctx.options.get("domain_text") or {})}
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"prompts.task_options.domain_text: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    item_t = [t for t in templates if not is_review_template(t)]
    review_t = [t for t in templates if is_review_template(t)]
    units: list[tuple[int, int, int]] = []  # (user or -1, position, item)
    if item_t:
        units += [(-1, -1, i) for i in range(data.num_items) if data.texts[i]]
    reviews = data.user_columns.get("review")
    summaries = data.user_columns.get("summary")
    if review_t and reviews is not None and opts["reviews"]:
        for u in range(data.num_users):
            seq, revs = data.train_sequence(u), reviews[u]
            units += [(u, p, int(seq[p])) for p in range(len(seq)) if revs[p] and revs[p].strip()]
    if not units:
        raise ConfigError("domain_text: no item text and no training review to train on")
    max_tokens = int(opts["max_tokens"])
    out = []
    for u, p, item in weighted(units, weight, rng):
        if u < 0:
            t = item_t[rng.randrange(len(item_t))]
            ids, labels = r.item_example(t, item, text=data.texts[item])
        else:
            t = review_t[rng.randrange(len(review_t))]
            summary = (summaries[u][p] if summaries is not None else "") or ""
            ids, labels = r.item_example(t, item, text=data.texts[item], review=" ".join(reviews[u][p].split()),
                                         summary=" ".join(summary.split()))
        out.append((ids[:max_tokens], labels[:max_tokens]))
    return out
