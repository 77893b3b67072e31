"""Item keys -> catalogue rows: item ids first, then (optionally) exact titles. Shared by the prepared data
(:class:`~generative_rec.data.RecData`) and the bundle (which the server loads without the data package)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from generative_rec.errors import UnknownItemError


def lookup_keys(keys: Sequence, by_id: Mapping[str, int], by_title: Mapping[str, int] | None = None) -> list[int]:
    """Rows of item ids (ids win) or, with ``by_title``, exact titles; UnknownItemError lists every miss."""
    out, missing = [], []
    for k in keys:
        k = str(k)
        if k in by_id:
            out.append(by_id[k])
        elif by_title is not None and k in by_title:
            out.append(by_title[k])
        else:
            missing.append(k)
    if missing:
        raise UnknownItemError(missing)
    return out
