"""Item ID schemes. Importing this package registers every scheme in ``SCHEMES`` (and its options dataclass
in ``SCHEME_OPTIONS``)."""

from generative_rec.indexing import (  # noqa: F401  (registration)
    atomic,
    collaborative,
    random_ids,
    semantic,
    sequential,
    title,
)
from generative_rec.indexing.base import (
    SCHEME_OPTIONS,
    SCHEMES,
    IndexConfig,
    ItemIndex,
    build_index,
    register,
    scheme_options,
)

__all__ = ["SCHEMES", "SCHEME_OPTIONS", "IndexConfig", "ItemIndex", "build_index", "register", "scheme_options"]
