"""Training tasks: each turns the training data into (input_ids, labels) examples for one epoch.

A task is one small module with a builder ``build(ctx, templates, weight, rng) -> list[example]``,
registered with ``@register("name")``. ``weight`` scales the task's natural size (one example per unit:
a user window for next_item, an item for item_title, ...). Builders use training data only
(``ctx.data.train_sequence``) and must be pure functions of ``rng`` so epochs can be rebuilt on resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from generative_rec.data import RecData
    from generative_rec.prompts import Renderer, Template

Example = tuple[list[int], list[int]]


@dataclass
class TaskContext:
    """What every task builder may use."""

    data: RecData
    renderer: Renderer
    max_history: int = 20
    min_context: int = 1
    windows: str = "last"
    options: dict = field(default_factory=dict)  # task name -> task-specific options


Builder = Callable[[TaskContext, "list[Template]", float, random.Random], "list[Example]"]
TASKS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        TASKS[name] = fn
        return fn

    return deco


def weighted(units: list, weight: float, rng: random.Random) -> list:
    """``weight`` x len(units) draws: whole passes without replacement, then a random remainder."""
    whole, frac = int(weight), weight - int(weight)
    out = []
    for _ in range(whole):
        out += units
    if frac > 0:
        out += rng.sample(units, int(round(frac * len(units))))
    return out
