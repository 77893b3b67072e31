"""Item ID schemes. Importing this package registers every scheme in ``SCHEMES``."""

from generative_rec.indexing import (  # noqa: F401  (registration)
    atomic,
    collaborative,
    random_ids,
    semantic,
    sequential,
    title,
)
from generative_rec.indexing.base import SCHEMES, IndexConfig, ItemIndex, build_index, register

__all__ = ["SCHEMES", "IndexConfig", "ItemIndex", "build_index", "register"]
