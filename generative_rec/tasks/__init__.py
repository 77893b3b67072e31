"""Training tasks (one module each). Importing this package registers them in ``TASKS``."""

from __future__ import annotations

import random

from generative_rec.errors import ConfigError
from generative_rec.prompts import Template
from generative_rec.tasks import domain_text, explain, item_title, next_item  # noqa: F401  (registration)
from generative_rec.tasks.base import TASKS, Example, TaskContext, register, weighted

__all__ = ["TASKS", "TaskContext", "build_task", "register", "weighted"]


def build_task(name: str, ctx: TaskContext, templates: list[Template], weight: float,
               rng: random.Random) -> list[Example]:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})")
    if not templates:
        raise ConfigError(f"no templates for task {name!r}: add a prompts/*.yaml with `task: {name}`")
    return TASKS[name](ctx, templates, weight, rng)
