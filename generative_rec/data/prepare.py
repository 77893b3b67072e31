"""``genrec prepare``: raw files -> a validated, split data set on disk (HF ``datasets``).

Output folder::

    meta.json   what was read, the filters applied, counts, the split protocol
    items/      item_id, title, text, attributes (list), plus the raw item fields
    users/      user_id, items (chronological), timestamps (and ratings / review texts if present)

Sequences are chronological per user with ties kept in input order (a stable sort on time only; never by
item id). The split is leave-one-out by position: the last item is the test target, the second to last the
validation target, the rest the training part. It is computed from ``users`` by
:class:`~generative_rec.data.dataset.RecData`, so it cannot drift from what is stored.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from generative_rec.data.readers import AtomicSpec, TableSpec, read_atomic, read_table
from generative_rec.data.tables import Interactions, Items
from generative_rec.errors import ConfigError, DataError
from generative_rec.io import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

MIN_LOO_LENGTH = 3  # train part >= 1, validation target, test target


@dataclass
class PrepareConfig:
    """How to turn raw files into a prepared data set."""

    source: str = field(default="ml-100k", metadata={"help": "ml-100k | atomic | table | amazon"})
    output: str = field(default="data/ml-100k", metadata={"help": "folder to write"})
    atomic: dict | None = field(default=None, metadata={"help": "AtomicSpec fields (source=atomic)"})
    table: dict | None = field(default=None, metadata={"help": "TableSpec fields (source=table)"})
    amazon: dict | None = field(default=None, metadata={"help": "AmazonSpec fields (source=amazon)"})
    min_rating: float | None = field(default=None, metadata={"help": "drop interactions rated below this"})
    kcore: int = field(default=0, metadata={"help": "iterative k-core on users and items (0 = off)"})
    max_history: int | None = field(default=None, metadata={"help": "keep each user's last N interactions"})
    dedupe: bool = field(default=True, metadata={"help": "keep only the first (user, item) interaction"})
    drop_unknown_items: bool = field(default=False, metadata={"help": "drop, instead of failing on, interactions whose item has no metadata"})
    attribute_field: str | None = field(default=None, metadata={"help": "item field holding attributes (genres, categories), whitespace separated"})
    new_items: float = field(default=0.0, metadata={
        "help": "cold-start protocol: seeded fraction of catalogue items whose training interactions are removed "
                "(they stay in the catalogue and appear only as validation / test targets); 0 = off"})
    new_items_seed: int = field(default=0, metadata={"help": "seed of the new-item draw"})
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.new_items < 1.0:
            raise ConfigError(f"new_items must be a fraction in [0, 1), not {self.new_items!r}")


def load_source(cfg: PrepareConfig) -> tuple[Interactions, Items | None, dict]:
    """Read the raw data for ``cfg.source``. Returns interactions, items and presentation hints."""
    hints: dict = {}
    if cfg.source == "ml-100k":
        from generative_rec.data.movielens import fetch_ml100k

        d = fetch_ml100k()
        inter, items = read_atomic(AtomicSpec(inter=str(d / "ml-100k.inter"), item=str(d / "ml-100k.item"),
                                              title_field="movie_title", text_fields=["release_year", "class"]))
        assert items is not None
        # "Toy Story" + 1995 -> "Toy Story (1995)"; genres are the attributes.
        items.titles = [f"{t} ({y})" if y else t for t, y in zip(items.titles, items.fields["release_year"], strict=True)]
        items.fields["genres"] = items.fields.pop("class")
        hints = {"name": "ml-100k", "attribute_field": "genres", "domain": "movie"}
    elif cfg.source == "atomic":
        if not cfg.atomic:
            raise ConfigError("source=atomic needs an 'atomic' section (inter, item, field names)")
        inter, items = read_atomic(AtomicSpec(**cfg.atomic))
        hints = {"name": Path(cfg.atomic["inter"]).stem}
    elif cfg.source == "table":
        if not cfg.table:
            raise ConfigError("source=table needs a 'table' section (path and column mapping)")
        inter, items = read_table(TableSpec(**cfg.table))
        hints = {"name": Path(cfg.table["path"]).name.split(".")[0]}
    elif cfg.source == "amazon":
        from generative_rec.data.amazon import AmazonSpec, read_amazon

        if not cfg.amazon:
            raise ConfigError("source=amazon needs an 'amazon' section (path to the review JSONL)")
        inter, items = read_amazon(AmazonSpec(**cfg.amazon))
        hints = {"name": Path(cfg.amazon["path"]).name.split(".")[0], "domain": "product"}
    else:
        raise ConfigError(f"unknown source {cfg.source!r} (expected ml-100k, atomic, table or amazon)")
    if cfg.attribute_field:
        hints["attribute_field"] = cfg.attribute_field
    return inter, items, hints


def check_items_known(inter: Interactions, items: Items, drop: bool) -> Interactions:
    known = set(items.ids)
    bad = np.array([i not in known for i in inter.items])
    if not bad.any():
        return inter
    first = int(np.argmax(bad))
    n_bad = int(bad.sum())
    if not drop:
        line = int(inter.lines[first]) if inter.lines is not None else None
        raise DataError(
            f"item {inter.items[first]!r} has no metadata in {items.source or 'the item table'} "
            f"({n_bad} interaction(s) like this; pass drop_unknown_items: true to drop them)",
            inter.source or None, line,
        )
    log.warning("dropping %d interaction(s) whose item has no metadata", n_bad)
    return inter.take(np.flatnonzero(~bad))


def kcore_filter(inter: Interactions, k: int) -> Interactions:
    """Iteratively drop users and items with fewer than ``k`` interactions."""
    keep = np.ones(len(inter), dtype=bool)
    users, items = np.asarray(inter.users, dtype=object), np.asarray(inter.items, dtype=object)
    while True:
        uc = Counter(users[keep])
        ic = Counter(items[keep])
        new = keep & np.array([uc[u] >= k for u in users]) & np.array([ic[i] >= k for i in items])
        if new.sum() == keep.sum():
            break
        keep = new
    return inter.take(np.flatnonzero(keep))


def build_sequences(inter: Interactions, cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """Group rows by user (users in order of first appearance) and sort each group by time.

    Returns ``user -> row indices`` in chronological order; equal timestamps keep input order
    (``kind='stable'`` on the timestamp only).
    """
    groups: dict[str, list[int]] = {}
    for row, u in enumerate(inter.users):
        groups.setdefault(u, []).append(row)
    out = {}
    for u, rows in groups.items():
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(inter.timestamps[rows], kind="stable")
        rows = rows[order]
        if cfg.dedupe:
            seen, keep = set(), []
            for r in rows:
                if inter.items[r] not in seen:
                    seen.add(inter.items[r])
                    keep.append(r)
            rows = np.asarray(keep, dtype=np.int64)
        if cfg.max_history:
            rows = rows[-cfg.max_history:]
        out[u] = rows
    return out


def prepare(cfg: PrepareConfig) -> Path:
    """Read, validate, filter, split and write a data set. Returns the output folder."""
    import datasets

    t0 = time.time()
    out = Path(cfg.output)
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists (use --overwrite to replace it)")
    inter, items, hints = load_source(cfg)
    n_raw = len(inter)
    if items is not None:
        inter = check_items_known(inter, items, cfg.drop_unknown_items)
    if cfg.min_rating is not None:
        if inter.ratings is None:
            raise ConfigError("min_rating is set but the data has no rating column")
        inter = inter.take(np.flatnonzero(inter.ratings >= cfg.min_rating))
    if cfg.kcore > 1:
        inter = kcore_filter(inter, cfg.kcore)
    seqs = build_sequences(inter, cfg)
    short = [u for u, r in seqs.items() if len(r) < MIN_LOO_LENGTH]
    for u in short:
        del seqs[u]
    if short:
        log.info("dropped %d user(s) with fewer than %d interactions (leave-one-out needs %d)",
                 len(short), MIN_LOO_LENGTH, MIN_LOO_LENGTH)
    if not seqs:
        raise DataError(f"no user has {MIN_LOO_LENGTH} or more interactions after filtering", inter.source or None)

    # Catalogue: items with at least one kept interaction, in item-table order (or first appearance).
    used = {inter.items[r] for rows in seqs.values() for r in rows}
    cold = None
    if cfg.new_items > 0:
        seqs, cold = hold_out_new_items(seqs, inter, used, cfg.new_items, cfg.new_items_seed)
    if items is None:
        order: list[str] = []
        for rows in seqs.values():
            order.extend(inter.items[r] for r in rows)
        ids = list(dict.fromkeys(order))
        items = Items(ids, list(ids), {}, source="")
    keep_items = [j for j, i in enumerate(items.ids) if i in used]
    attr_field = hints.get("attribute_field")
    item_rows = {
        "item_id": [items.ids[j] for j in keep_items],
        "title": [items.titles[j] for j in keep_items],
    }
    for k, v in items.fields.items():
        item_rows[k] = [v[j] for j in keep_items]
    item_rows["attributes"] = [v.split() for v in item_rows[attr_field]] if attr_field in item_rows else [[] for _ in keep_items]
    item_rows["text"] = [describe_item(item_rows, n, attr_field) for n in range(len(keep_items))]

    user_rows: dict[str, list] = {"user_id": [], "items": [], "timestamps": []}
    if inter.ratings is not None:
        user_rows["ratings"] = []
    for k in inter.texts:
        user_rows[k] = []
    for u, rows in seqs.items():
        user_rows["user_id"].append(u)
        user_rows["items"].append([inter.items[r] for r in rows])
        user_rows["timestamps"].append([float(inter.timestamps[r]) for r in rows])
        if inter.ratings is not None:
            user_rows["ratings"].append([float(inter.ratings[r]) for r in rows])
        for k, v in inter.texts.items():
            user_rows[k].append([v[r] for r in rows])

    n_inter = sum(len(r) for r in seqs.values())
    meta = {
        "name": hints.get("name", cfg.source),
        "domain": hints.get("domain", "item"),
        "source": cfg.source,
        "config": asdict(cfg),
        "attribute_field": attr_field,
        "split": "leave_one_out (last = test, second to last = validation, rest = train; chronological, "
                 "ties in input order)",
        "num_users": len(seqs),
        "num_items": len(keep_items),
        "num_interactions": n_inter,
        "num_raw_interactions": n_raw,
        "density": n_inter / (len(seqs) * max(1, len(keep_items))),
        "user_text_fields": sorted(inter.texts),
        "prepared_in_s": None,
    }
    if cold is not None:
        meta["cold_start"] = cold
        meta["split"] += (f"; cold start: {cold['num_new_items']} new items ({cfg.new_items:.0%} of the catalogue, "
                          f"seed {cfg.new_items_seed}) have no training interactions and appear only as "
                          "validation / test targets")
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        datasets.Dataset.from_dict(item_rows).save_to_disk(str(tmp / "items"))
        datasets.Dataset.from_dict(user_rows).save_to_disk(str(tmp / "users"))
        meta["prepared_in_s"] = round(time.time() - t0, 2)
        atomic_write_json(tmp / "meta.json", meta)
    log.info("prepared %s: %d users, %d items, %d interactions -> %s",
             meta["name"], meta["num_users"], meta["num_items"], n_inter, out)
    return out


def hold_out_new_items(seqs: dict[str, np.ndarray], inter: Interactions, catalogue: set[str], fraction: float,
                       seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """The cold-start protocol: draw ``fraction`` of the catalogue (seeded, in sorted-id order so the draw does
    not depend on input order) as *new items*, and remove every interaction with them except where it is a
    user's validation or test target (the last two positions). The last two items of every sequence are
    unchanged, so the leave-one-out targets are those of the standard protocol; only training parts shrink.
    Users left with fewer than ``MIN_LOO_LENGTH`` interactions are dropped. New items stay in the catalogue
    with their text (a model that reads text can still recommend them; an ID-only model has never seen them).

    Returns the new sequences and the record kept in ``meta.json["cold_start"]``."""
    ids = sorted(catalogue)
    rng = np.random.default_rng(seed)
    n_new = int(round(fraction * len(ids)))
    new = {ids[j] for j in rng.choice(len(ids), size=n_new, replace=False)}
    out: dict[str, np.ndarray] = {}
    removed = dropped = valid_new = test_new = 0
    for u, rows in seqs.items():
        n = len(rows)
        keep = [r for pos, r in enumerate(rows) if pos >= n - 2 or inter.items[r] not in new]
        removed += n - len(keep)
        if len(keep) < MIN_LOO_LENGTH:
            dropped += 1
            continue
        out[u] = np.asarray(keep, dtype=np.int64)
        valid_new += inter.items[keep[-2]] in new
        test_new += inter.items[keep[-1]] in new
    if not out:
        raise DataError("no user keeps a training part after removing the new items' interactions")
    log.info("cold start: %d new items; %d training interactions removed, %d user(s) dropped; new targets: "
             "%d validation, %d test", len(new), removed, dropped, valid_new, test_new)
    return out, {"new_item_fraction": fraction, "seed": seed, "num_new_items": len(new),
                 "new_items": sorted(new), "removed_interactions": removed, "dropped_users": dropped,
                 "valid_targets_new": valid_new, "test_targets_new": test_new}


def describe_item(rows: dict[str, list], n: int, attr_field: str | None) -> str:
    """A one-line description of item ``n`` from its title and other fields (used for embeddings)."""
    parts = [rows["title"][n]]
    for k, v in rows.items():
        if k in ("item_id", "title", "attributes", "text") or not v[n]:
            continue
        val = v[n] if not isinstance(v[n], list) else " ".join(v[n])
        if k == attr_field:
            parts.append(f"{k}: {', '.join(val.split())}")
        elif k != "release_year":  # already in an ml-100k title
            parts.append(f"{k}: {val}")
    return ". ".join(parts)
