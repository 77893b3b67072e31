"""A prepared data set loaded for use: dense item indices, sequences and the leave-one-out split."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from generative_rec.errors import DataError
from generative_rec.io import read_json
from generative_rec.keys import lookup_keys

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Example:
    """One evaluation case: a user's history (dense item indices, oldest first) and the held-out target."""

    user: int
    history: np.ndarray
    target: int


class RecData:
    """Read-only view of a prepared folder.

    Items are addressed by a dense index ``0..num_items-1`` (catalogue order, which is input order: it
    says nothing about the split). The split is leave-one-out by position:

    - ``train_sequence(u)``: all but the last two items (the only part any model may train on),
    - ``examples('valid')``: history = train part, target = second to last item,
    - ``examples('test')``: history = train part + validation item, target = last item.
    """

    def __init__(self, path: str | Path):
        import datasets

        self.path = Path(path)
        if not (self.path / "meta.json").exists():
            raise DataError("not a prepared data set (no meta.json); run `genrec prepare` first", str(self.path))
        self.meta = read_json(self.path / "meta.json")
        items = datasets.load_from_disk(str(self.path / "items"))
        users = datasets.load_from_disk(str(self.path / "users"))
        self.item_ids: list[str] = list(items["item_id"])
        self.titles: list[str] = list(items["title"])
        self.texts: list[str] = list(items["text"])
        self.attributes: list[list[str]] = list(items["attributes"])
        self.item_table = items
        self.item_to_idx = {iid: n for n, iid in enumerate(self.item_ids)}
        self.user_ids: list[str] = list(users["user_id"])
        self.sequences: list[np.ndarray] = [
            np.fromiter((self.item_to_idx[i] for i in seq), dtype=np.int64, count=len(seq)) for seq in users["items"]
        ]
        self.timestamps: list[list[float]] = list(users["timestamps"])
        self.user_columns = {c: users[c] for c in users.column_names if c not in ("user_id", "items", "timestamps")}

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    def train_sequence(self, u: int) -> np.ndarray:
        return self.sequences[u][:-2]

    def train_sequences(self) -> list[np.ndarray]:
        return [s[:-2] for s in self.sequences]

    def history(self, u: int, split: str) -> np.ndarray:
        """What a model may see when predicting ``split``'s target for user ``u``."""
        if split == "valid":
            return self.sequences[u][:-2]
        if split == "test":
            return self.sequences[u][:-1]
        raise ValueError(f"split must be 'valid' or 'test', not {split!r}")

    def examples(self, split: str, users: np.ndarray | None = None) -> list[Example]:
        users = np.arange(self.num_users) if users is None else np.asarray(users)
        pos = -2 if split == "valid" else -1
        return [Example(int(u), self.history(int(u), split), int(self.sequences[u][pos])) for u in users]

    def sample_users(self, n: int | None, seed: int = 0) -> np.ndarray:
        """A fixed, seeded sample of ``n`` users (all users when ``n`` is None or too large), sorted."""
        if n is None or n >= self.num_users:
            return np.arange(self.num_users)
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(self.num_users, size=n, replace=False))

    @cached_property
    def train_counts(self) -> np.ndarray:
        """Interactions per item in the training part only (the popularity every model may use)."""
        c = np.zeros(self.num_items, dtype=np.int64)
        for s in self.train_sequences():
            np.add.at(c, s, 1)
        return c

    def lookup(self, keys: list[str], by_title: bool = True) -> list[int]:
        """Dense indices for item ids (or exact titles). Raises UnknownItemError listing every miss."""
        return lookup_keys(keys, self.item_to_idx, self.title_to_idx if by_title else None)

    @cached_property
    def new_items(self) -> np.ndarray:
        """Boolean mask ``[num_items]``: items with no interaction in any training part. Under the cold-start
        protocol (``meta.json["cold_start"]``) these include every held-out new item; without it, the items
        that happen to occur only as validation / test targets. No ID-only model has seen them."""
        return self.train_counts == 0

    @property
    def cold_start(self) -> dict | None:
        """The cold-start protocol's record (``genrec prepare --new-items``), or None for the standard one."""
        return self.meta.get("cold_start")

    @cached_property
    def title_to_idx(self) -> dict[str, int]:
        m: dict[str, int] = {}
        for n, t in enumerate(self.titles):
            m.setdefault(t, n)
        return m
