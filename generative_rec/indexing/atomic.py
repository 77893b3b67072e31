"""Atomic IDs: one new vocabulary token per item (``<item_17>``).

The number in the token's name is the catalogue position and means nothing to the model: a new token's
embedding is initialised from the item's own text (see ``modeling.add_item_tokens``), not from its name.
Shortest possible ID (one decoding step) at the cost of one new embedding row per item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from generative_rec.indexing.base import IndexConfig, ItemIndex, register


@dataclass
class AtomicOptions:
    format: str = field(default="<item_{n}>", metadata={
        "help": "token name; {n} is the item's catalogue position"})


@register("atomic", AtomicOptions)
def build(data, cfg: IndexConfig, options: AtomicOptions) -> ItemIndex:
    fmt = options.format
    toks = [fmt.format(n=n) for n in range(data.num_items)]
    return ItemIndex(
        scheme="atomic", item_ids=list(data.item_ids), id_texts=toks, new_tokens=toks,
        token_items={t: [n] for n, t in enumerate(toks)},
    )
