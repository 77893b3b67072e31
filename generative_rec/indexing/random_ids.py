"""Random IDs: each item gets a random fixed-width number (seeded), written with ordinary digit tokens.

A control, and a weak one: numbers are drawn independently of the items, so related items share no
structure — two Star Wars films are as far apart as a Star Wars film and a documentary. The LLM gets no
help from shared prefixes (as with collaborative or semantic IDs), nor from text (as with titles): it has
to memorise every item's digits one by one, and a wrong first digit leads to an arbitrary, unrelated item.
Numbers are drawn without replacement from ``10**width`` (by default one digit wider than the catalogue
needs, so IDs do not simply fill a range) and zero-padded, so no ID is a prefix of another.
No new tokens; uses no interaction data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from generative_rec.indexing.base import IndexConfig, ItemIndex, register


@dataclass
class RandomOptions:
    width: int | None = field(default=None, metadata={
        "help": "digits per ID; null: one more than the catalogue size needs"})


@register("random", RandomOptions)
def build(data, cfg: IndexConfig, options: RandomOptions) -> ItemIndex:
    n = data.num_items
    min_width = len(str(max(n - 1, 0)))
    width = options.width if options.width is not None else min_width + 1
    if 10 ** width < n:
        raise ValueError(f"width {width} has room for {10 ** width} IDs, the catalogue has {n} items")
    rng = np.random.default_rng(cfg.seed)
    numbers = rng.choice(10 ** width, size=n, replace=False)
    ids = [str(int(x)).zfill(width) for x in numbers]
    return ItemIndex(scheme="random", item_ids=list(data.item_ids), id_texts=ids, meta={"width": width})
