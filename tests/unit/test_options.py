"""docs/options.md lists every option of every ID scheme and baseline, as generated from the dataclasses."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from generative_rec.evaluation.baselines import BASELINE_OPTIONS
from generative_rec.indexing import SCHEME_OPTIONS
from generative_rec.options import describe
from generative_rec.options_doc import BEGIN, END, reference_markdown

DOC = Path(__file__).parents[2] / "docs" / "options.md"


def _sections(text: str) -> dict[str, str]:
    """``### `name` (Class)`` heading -> the text up to the next heading, per registry part of the doc."""
    out = {}
    for part, registry_heading in (("schemes", "## Item-ID schemes"), ("baselines", "## Baselines")):
        body = text.split(registry_heading, 1)[1].split("\n## ", 1)[0]
        for m in re.finditer(r"^### `(\w+)` \((\w+)\)\n(.*?)(?=^### |\Z)", body, re.S | re.M):
            out[f"{part}:{m.group(1)}"] = m.group(2) + "\n" + m.group(3)
    return out


def test_doc_lists_every_option_of_every_scheme_and_baseline():
    text = DOC.read_text(encoding="utf-8")
    sections = _sections(text)
    for part, registry in (("schemes", SCHEME_OPTIONS), ("baselines", BASELINE_OPTIONS)):
        for name, cls in registry.items():
            body = sections.get(f"{part}:{name}")
            assert body is not None, f"docs/options.md has no section for {part} {name!r}"
            assert body.startswith(cls.__name__ + "\n")
            for f in fields(cls):
                assert f"| `{f.name}` |" in body, f"docs/options.md: {name}.{f.name} is missing"
            for d in describe(cls):
                assert f"`{d.default}`" in body, f"docs/options.md: default of {name}.{d.name} differs"
            if not fields(cls):
                assert "No options" in body
    assert len(sections) == len(SCHEME_OPTIONS) + len(BASELINE_OPTIONS)


def test_doc_reference_is_the_generated_one():
    text = DOC.read_text(encoding="utf-8")
    block = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END
    assert block == reference_markdown(), (
        "docs/options.md is out of date: run `python -m generative_rec.options_doc --write docs/options.md`")
