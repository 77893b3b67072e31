"""Explanation: (history, recommended item) -> a short reason; loss on the reason (and EOS) only.

One example per user unit: a random position ``p`` of the user's TRAINING sequence (never the validation
or test item) gives the recommended item ``seq[p]`` and its history ``seq[p - max_history: p]``. The reason is

- the user's own review of ``seq[p]`` cut to one sentence (:func:`~generative_rec.explain_targets.review_target`,
  P5 / PETER) when the data has a ``review`` column (pairs whose review is empty are skipped);
- otherwise a templated reason from verifiable evidence: the shown history items most similar to ``seq[p]``
  and the attributes they share (:func:`~generative_rec.explain_targets.history_target`).

Options (``prompts.task_options.explain``): ``max_history`` (items shown, default 10), ``min_history``
(default 1), ``max_cited`` (default 2), ``source`` (``auto`` | ``review`` | ``history``), ``verb`` (default
by domain: "watched" for movies).
"""

from __future__ import annotations

from generative_rec.errors import ConfigError
from generative_rec.explain_targets import history_target, review_target
from generative_rec.tasks.base import register, weighted

DEFAULTS = {"max_history": 10, "min_history": 1, "max_cited": 2, "source": "auto", "verb": None}
VERBS = {"movie": "watched", "book": "read", "product": "bought", "song": "listened to"}


def explain_options(options: dict) -> dict:
    """``task_options.explain`` merged over :data:`DEFAULTS` (unknown keys are errors)."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"prompts.task_options.explain: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **opts}
    if opts["source"] not in ("auto", "review", "history"):
        raise ConfigError(f"prompts.task_options.explain.source must be auto, review or history, not {opts['source']!r}")
    return opts


def item_features(data, item: int) -> list[str]:
    """Feature words of an item for picking a review sentence: its attributes, else its ``keywords`` field."""
    if data.attributes[item]:
        return list(data.attributes[item])
    if "keywords" in data.item_table.column_names:
        return str(data.item_table[item]["keywords"] or "").split()
    return []


def review_reason(data, user: int, pos: int, item: int) -> str | None:
    """One sentence of ``user``'s review at sequence position ``pos`` (None when there is no text)."""
    reviews = data.user_columns["review"][user]
    summaries = data.user_columns.get("summary")
    summary = summaries[user][pos] if summaries is not None else ""
    return review_target(reviews[pos] or "", summary or "", item_features(data, item))


@register("explain")
def build(ctx, templates, weight, rng):
    data, r = ctx.data, ctx.renderer
    o = explain_options(ctx.options.get("explain"))
    has_reviews = "review" in data.user_columns
    if o["source"] == "review" and not has_reviews:
        raise ConfigError("prompts.task_options.explain.source is 'review' but the data has no review column")
    use_reviews = has_reviews and o["source"] != "history"
    domain = data.meta.get("domain", "item")
    verb = o["verb"] or VERBS.get(domain, "chose")
    lo = max(1, int(o["min_history"]))
    units = [u for u in range(data.num_users) if len(data.train_sequence(u)) > lo]
    out = []
    for u in weighted(units, weight, rng):
        seq = data.train_sequence(u)  # never the validation or test item
        pos = rng.randrange(lo, len(seq))
        item = int(seq[pos])
        hist = [int(i) for i in seq[max(0, pos - int(o["max_history"])): pos]]
        t = templates[rng.randrange(len(templates))]
        if use_reviews:
            reason = review_reason(data, u, pos, item)
            if not reason:
                continue
        else:
            reason = history_target(hist, item, data.titles, data.attributes, rng, max_cited=int(o["max_cited"]),
                                    noun=domain, verb=verb).text
        out.append(r.item_example(t, item, history=hist, reason=reason))
    return out
