"""The generated reference of ``docs/options.md``: every ID scheme's and every baseline's options.

    python -m generative_rec.options_doc                          # print it
    python -m generative_rec.options_doc --write docs/options.md  # replace the generated block

``tests/unit/test_options.py`` fails when the doc differs from the dataclasses.
"""

from __future__ import annotations

from pathlib import Path

from generative_rec.errors import ConfigError
from generative_rec.evaluation.baselines import BASELINE_OPTIONS
from generative_rec.indexing import SCHEME_OPTIONS
from generative_rec.options import markdown_tables

BEGIN = "<!-- BEGIN GENERATED OPTIONS (python -m generative_rec.options_doc --write docs/options.md) -->"
END = "<!-- END GENERATED OPTIONS -->"


def reference_markdown() -> str:
    """The generated part of ``docs/options.md``: every scheme's and every baseline's options."""
    return "\n".join([
        BEGIN, "",
        "## Item-ID schemes: `index.options`", "",
        markdown_tables(SCHEME_OPTIONS),
        "## Baselines: hyper-parameters (`make(name, **params)`, tuning grids, "
        "`model.collaborative.params`)", "",
        markdown_tables(BASELINE_OPTIONS),
        END,
    ])


def write_reference(path: str) -> bool:
    """Replace the generated block of ``path`` by :func:`reference_markdown`; ``True`` if it changed."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ConfigError(f"{p} has no generated block ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + reference_markdown() + tail
    if new != text:
        p.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="print (or --write into a doc) the generated options reference")
    ap.add_argument("--write", metavar="DOC", help="replace the generated block of this Markdown file")
    a = ap.parse_args()
    if a.write:
        print(("updated " if write_reference(a.write) else "unchanged ") + a.write)
    else:
        print(reference_markdown())
