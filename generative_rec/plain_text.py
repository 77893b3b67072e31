"""Text from data (titles, reviews, attribute values) as token ids that are only ever plain text.

A tokenizer matches its added tokens anywhere in a string: a catalogue title such as ``"Best <item_5> ever"``
or ``"... <|im_end|>"`` would otherwise be read as item 5's ID token or as the end of the sequence, so data
could inject items or control tokens into a prompt or a training target. :func:`plain_ids` tokenizes with
special tokens split into ordinary pieces and, where an added token (an item-ID token, for instance) still
matches, cuts the text just after that match's first character and tokenizes the pieces separately. The
result decodes to the same text and holds no added or special token.
"""

from __future__ import annotations

import contextlib


def _added_ids(tokenizer) -> dict[int, str]:
    cached = getattr(tokenizer, "_genrec_added_ids", None)
    if cached is None or cached[0] != len(tokenizer):
        added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items() if t.content}
        cached = (len(tokenizer), added)
        with contextlib.suppress(AttributeError):  # a tokenizer that takes no new attributes: recompute each time
            tokenizer._genrec_added_ids = cached
    return cached[1]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if text else []


def plain_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` read as plain text: never an added token (item IDs) or a special token."""
    added = _added_ids(tokenizer)
    ids = _encode(tokenizer, text)
    cuts: set[int] = set()
    while True:
        found = {added[i] for i in ids if i in added}
        if not found:
            return ids
        new = {start + 1 for s in found for start in _occurrences(text, s)} - cuts
        if not new:  # an added token the text does not spell out: nothing left to cut
            raise ValueError(f"cannot tokenize {text[:80]!r} as plain text")
        cuts |= new
        bounds = sorted(cuts)
        ids = [i for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True) for i in _encode(tokenizer, text[a:b])]


def _occurrences(text: str, sub: str):
    start = text.find(sub)
    while start != -1:
        yield start
        start = text.find(sub, start + 1)
