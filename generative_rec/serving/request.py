"""What a recommendation request means, the same for the server and for batch generation.

Turning a request (history keys, ``k``, exclusions) into a prompt and an exclusion set
(:func:`prepare`), and a ranked result into response items (:func:`items_of`). ``POST /v1/recommendations``
(``serving.app``) and ``genrec generate`` (``generative_rec.generate``) both call these, so the two give the
same top-K for the same input. A request that cannot be served as sent raises :class:`RequestError` (HTTP 400
in the server, an error line or a refusal in batch generation). Needs only the bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keep `genrec --help` free of torch / vLLM imports
    from generative_rec.decoding.beam import Ranked

MAX_HISTORY_ITEMS = 1000  # longest history a request may send (the prompt keeps the last max_history)
DEFAULT_MAX_K = 100
MAX_BEAMS = 200  # widest beam a recommendation request may ask for


class RequestError(ValueError):
    """A request that cannot be served as sent; the message says what is wrong (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class Prepared:
    """A recommendation request resolved against a bundle."""

    prompt: list[int]  # token ids; generation continues with the next item's ID
    exclude: list[int]  # catalogue rows that may not be recommended
    history: list[int]  # catalogue rows of the whole history
    used: int  # how many (most recent) history items the prompt shows
    k: int


def prepare(bundle, keys: Sequence[str | int], k: int, exclude_history: bool = True,
            exclude_keys: Sequence[str | int] = (), max_k: int | None = None) -> Prepared:
    """Resolve history keys (item ids or exact titles), check ``k``, build the prompt and exclusions (the
    requested ones plus the bundle's hidden items: those are never recommended)."""
    from generative_rec.errors import UnknownItemError

    if len(keys) == 0:
        raise RequestError("history is empty: send at least one item id or title", "history")
    if len(keys) > MAX_HISTORY_ITEMS:
        raise RequestError(f"history has {len(keys)} items; at most {MAX_HISTORY_ITEMS}", "history")
    if k < 1:
        raise RequestError(f"k must be at least 1 (got {k})", "k")
    n = bundle.num_items
    if k > n:
        raise RequestError(f"k={k} is larger than the catalogue ({n} items)", "k")
    if max_k is not None and k > max_k:
        raise RequestError(f"k={k} is larger than this server allows (max_k={max_k})", "k")
    try:
        rows = bundle.lookup([str(x) for x in keys])
    except UnknownItemError as e:
        raise RequestError(f"history: {e}; send catalogue item ids or exact titles", "history") from None
    try:
        extra = bundle.lookup([str(x) for x in exclude_keys]) if exclude_keys else []
    except UnknownItemError as e:
        raise RequestError(f"exclude: {e}", "exclude") from None
    exclude = sorted(set(rows if exclude_history else []) | set(extra) | set(getattr(bundle, "hidden", ())))
    if n - len(exclude) < k:
        raise RequestError(f"k={k} but only {n - len(exclude)} catalogue items remain after exclusions "
                           "(and hidden items)", "k")
    max_h = bundle.manifest.get("max_history")
    shown = rows[-max_h:] if max_h else rows
    return Prepared(bundle.prompt_ids(shown), exclude, rows, len(shown), k)


def items_of(bundle, ranked: Ranked) -> list[dict]:
    """``[{"item_id", "title", "score"}]`` best first; score = sequence log-probability of the item's ID."""
    return [{"item_id": bundle.item_ids[i], "title": bundle.titles[i], "score": float(s)}
            for i, s in zip(ranked.items, ranked.scores, strict=True)]
