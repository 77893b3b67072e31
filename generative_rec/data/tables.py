"""In-memory tables that every reader produces and ``prepare`` consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Interactions:
    """One row per interaction, in input order (input order breaks timestamp ties)."""

    users: list[str]
    items: list[str]
    timestamps: np.ndarray  # float64, same length
    ratings: np.ndarray | None = None  # float64 or None
    # Optional free text per interaction (review body, review summary) for the explanation task.
    texts: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""  # file the rows came from, for error messages
    lines: np.ndarray | None = None  # 1-based line number of each row in ``source``

    def __post_init__(self) -> None:
        n = len(self.users)
        if len(self.items) != n or len(self.timestamps) != n:
            raise ValueError("users, items and timestamps must have the same length")
        if self.ratings is not None and len(self.ratings) != n:
            raise ValueError("ratings must have the same length as users")
        for k, v in self.texts.items():
            if len(v) != n:
                raise ValueError(f"text column {k!r} must have the same length as users")

    def __len__(self) -> int:
        return len(self.users)

    def take(self, idx: np.ndarray) -> Interactions:
        idx = np.asarray(idx, dtype=np.int64)
        return Interactions(
            users=[self.users[i] for i in idx],
            items=[self.items[i] for i in idx],
            timestamps=self.timestamps[idx],
            ratings=None if self.ratings is None else self.ratings[idx],
            texts={k: [v[i] for i in idx] for k, v in self.texts.items()},
            source=self.source,
            lines=None if self.lines is None else self.lines[idx],
        )


@dataclass
class Items:
    """Item metadata: one row per item id. ``title`` is the short name; ``fields`` any other text."""

    ids: list[str]
    titles: list[str]
    fields: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.titles) != len(self.ids):
            raise ValueError("ids and titles must have the same length")
        for k, v in self.fields.items():
            if len(v) != len(self.ids):
                raise ValueError(f"item field {k!r} must have the same length as ids")

    def __len__(self) -> int:
        return len(self.ids)
