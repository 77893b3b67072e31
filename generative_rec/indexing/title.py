"""Title IDs: the item's title, in double quotes, is its ID (BIGRec-style: the LLM generates text it knows).

Rule (deterministic, uses no interaction data):

1. normalise the title: collapse runs of whitespace, strip, replace every ``"`` by ``'`` (so a title never
   contains the closing marker); an empty title becomes the item id;
2. titles that are still equal get a disambiguating suffix: every member of such a group (not only the
   second) becomes ``<title> [<item id>]``; if that text is taken too, ``[<item id>#2]``, ``#3``, ...;
3. the ID text is ``"<title>"`` — the closing quote terminates it.

Why this is prefix-free after tokenisation: no ID text is a string prefix of another (a prefix would have to
contain the other ID's closing ``"`` strictly inside its title, and titles have none), and for tokenizers
that segment the text (byte-level BPE as in SmolLM2, SentencePiece without lossy normalisation), token
sequence A being a prefix of token sequence B implies text A is a prefix of text B. So "Heat" and
"Heat Wave" tokenise as ``" Heat "`` vs ``" Heat Wave "``: they part at the second token. Tests check it
with the trie on real tokenizers.

Cost: IDs are long (about 8–12 tokens for MovieLens titles), so decoding and beam search are slower than
with codes; no new tokens.
"""

from __future__ import annotations

import re
from collections import Counter

from generative_rec.indexing.base import IndexConfig, ItemIndex, register
from generative_rec.options import NoOptions

QUOTE = '"'


def clean_title(title: str, item_id: str) -> str:
    t = re.sub(r"\s+", " ", title or "").strip().replace(QUOTE, "'")
    return t or re.sub(r"\s+", " ", item_id).strip().replace(QUOTE, "'")


def unique_titles(titles: list[str], item_ids: list[str]) -> list[str]:
    """Clean titles and make them unique (rule 1–2 of the module docstring)."""
    clean = [clean_title(t, i) for t, i in zip(titles, item_ids, strict=True)]
    counts = Counter(clean)
    taken = {t for t in clean if counts[t] == 1}
    out = list(clean)
    for n, t in enumerate(clean):
        if counts[t] == 1:
            continue
        iid = clean_title(item_ids[n], item_ids[n])
        cand, k = f"{t} [{iid}]", 1
        while cand in taken:
            k += 1
            cand = f"{t} [{iid}#{k}]"
        taken.add(cand)
        out[n] = cand
    return out


@register("title")  # no options
def build(data, cfg: IndexConfig, options: NoOptions) -> ItemIndex:
    titles = unique_titles(list(data.titles), list(data.item_ids))
    ids = [f"{QUOTE}{t}{QUOTE}" for t in titles]
    clean = Counter(clean_title(t, i) for t, i in zip(data.titles, data.item_ids, strict=True))
    n_dup = sum(n for n in clean.values() if n > 1)
    return ItemIndex(scheme="title", item_ids=list(data.item_ids), id_texts=ids,
                     meta={"disambiguated": n_dup, "rule": "quoted title; duplicates get ' [item id]'"})


def extend(index: ItemIndex, titles: list[str], item_ids: list[str]) -> list[str]:
    """ID texts of new items (``"<clean title>"``, no disambiguation: a new item never renames an existing
    one). ValueError names the first title whose ID an existing item or an earlier new item already has."""
    taken = {t: iid for t, iid in zip(index.id_texts, index.item_ids, strict=True)}
    out = []
    for title, iid in zip(titles, item_ids, strict=True):
        text = f"{QUOTE}{clean_title(title, iid)}{QUOTE}"
        if text in taken:
            raise ValueError(f"item {iid!r}: its ID {text} is already the ID of item {taken[text]!r} (title IDs "
                             "must be unique: give the new item a distinguishing title, e.g. with its year)")
        taken[text] = iid
        out.append(text)
    return out
