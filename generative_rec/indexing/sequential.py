"""Sequential IDs: numbers in order of first appearance in the training part (P5's scheme, made leak-free).

P5 numbered items along each user's sequence, so a test item's number was often the successor of the
last history item's. Here numbers follow the global order of first appearance *in training data only*;
items never seen in training get the numbers after all seen items, in catalogue order. Numbers are
zero-padded to a fixed width so that no ID is a prefix of another ("0012" never prefixes "00123").
No new tokens: digits are ordinary tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from generative_rec.indexing.base import IndexConfig, ItemIndex, first_appearance_order, register


@dataclass
class SequentialOptions:
    start: int = field(default=1, metadata={"help": "number of the first item"})


@register("sequential", SequentialOptions)
def build(data, cfg: IndexConfig, options: SequentialOptions) -> ItemIndex:
    start = options.start
    order = first_appearance_order(data)
    width = len(str(start + len(order) - 1))
    ids = [""] * data.num_items
    for rank, item in enumerate(order):
        ids[item] = str(start + rank).zfill(width)
    return ItemIndex(scheme="sequential", item_ids=list(data.item_ids), id_texts=ids,
                     meta={"width": width, "seen_in_training": int((data.train_counts > 0).sum())})
