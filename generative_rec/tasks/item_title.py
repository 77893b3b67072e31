"""ID <-> title alignment: the LLM learns what each item ID stands for (one example per item)."""

from __future__ import annotations

from generative_rec.tasks.base import register, weighted


@register("item_title")
def build(ctx, templates, weight, rng):
    r = ctx.renderer
    return [r.item_example(templates[rng.randrange(len(templates))], int(i))
            for i in weighted(list(range(ctx.data.num_items)), weight, rng)]
