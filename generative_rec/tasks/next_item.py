"""Next-item prediction: history -> the next item's ID (packed whole windows where the template allows)."""

from __future__ import annotations

import numpy as np

from generative_rec.errors import ConfigError
from generative_rec.tasks.base import register, weighted


def windows(seq: np.ndarray, width: int, mode: str, min_context: int) -> list[np.ndarray]:
    """Split a training sequence into windows of ``width`` items for packed training.

    ``last``: only the most recent window. ``all``: windows from the end backwards overlapping by
    ``min_context`` items, so every item after the first ``min_context`` is a target exactly once.
    """
    if mode not in ("last", "all"):
        raise ConfigError(f"prompts.windows must be 'last' or 'all', not {mode!r}")
    if len(seq) <= width or mode == "last":
        return [seq[-width:]]
    out, end, stride = [], len(seq), max(1, width - min_context)
    while end > min_context:
        out.append(seq[max(0, end - width): end])
        end -= stride
    return out[::-1]


@register("next_item")
def build(ctx, templates, weight, rng):
    r, data = ctx.renderer, ctx.data
    width = ctx.max_history + 1
    units = [w for u in range(data.num_users)
             for w in windows(data.train_sequence(u), width, ctx.windows, ctx.min_context)]
    out = []
    for w in weighted(units, weight, rng):
        if len(w) <= ctx.min_context:
            continue
        t = templates[rng.randrange(len(templates))]
        if t.sequence_capable:  # aligned prompts: 0..align-1 leading fillers, so every count is seen
            out.append(r.sequence_example(t, w, ctx.min_context, rng.randrange(r.align) if r.align else 0))
        else:
            cut = rng.randrange(ctx.min_context, len(w))
            out.append(r.next_item_example(t, w[max(0, cut - ctx.max_history): cut], int(w[cut])))
    return out
