"""Explanation: (history, recommended item) -> a short reason; loss on the reason (and EOS) only.

One example per user unit: a random position ``p`` of the user's TRAINING sequence (never the validation
or test item) gives the recommended item ``seq[p]`` and its history ``seq[p - max_history: p]``. The reason is

- the user's own review of ``seq[p]`` cut to one sentence (:func:`~generative_rec.explain.targets.review_target`,
  P5 / PETER) when the data has a ``review`` column (pairs whose review is empty are skipped);
- otherwise a templated reason from verifiable evidence: the shown history items most similar to ``seq[p]``
  and the attributes they share (:func:`~generative_rec.explain.targets.history_target`).

Options (``prompts.task_options.explain``): ``max_history`` (items shown, default 10), ``min_history``
(default 1), ``max_cited`` (default 2), ``source`` (``auto`` | ``review`` | ``history``), ``verb`` (default
by domain: "watched" for movies).
"""

from __future__ import annotations

from generative_rec.errors import ConfigError
from generative_rec.explain.contract import VERBS, explain_options
from generative_rec.explain.targets import history_target, review_reason
from generative_rec.tasks.base import register, weighted


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
