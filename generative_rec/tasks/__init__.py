"""Training tasks (one module each). Importing this package registers them in ``TASKS``."""

from generative_rec.tasks import domain_text, explain, item_title, next_item  # noqa: F401  (registration)
from generative_rec.tasks.base import TASKS, TaskContext, build_task, register, weighted

__all__ = ["TASKS", "TaskContext", "build_task", "register", "weighted"]
