"""Helpers of the vLLM tests (comparisons, JSONL); fixtures live in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from generative_rec.paths import genrec_home

API_KEY = "test-key"
SMOLLM2 = genrec_home() / "models" / "SmolLM2-135M-Instruct"  # converted by scripts/setup.sh
TIE_TOL = 1e-4  # scores this close may swap places between engines (fp32 summation order)


def assert_same_topk(a_items, a_scores, b_items, b_scores, tol: float = TIE_TOL) -> None:
    """Same ranked items and scores, allowing only near-tie (|score gap| < tol) reorderings at any rank."""
    a_scores, b_scores = np.asarray(a_scores, float), np.asarray(b_scores, float)
    assert len(a_items) == len(b_items), (a_items, b_items)
    np.testing.assert_allclose(a_scores, b_scores, atol=tol, rtol=0)
    sa = dict(zip(a_items, a_scores, strict=True))
    sb = dict(zip(b_items, b_scores, strict=True))
    for item in set(a_items) & set(b_items):
        assert abs(sa[item] - sb[item]) < tol, (item, a_items, b_items)
    for item in set(a_items) ^ set(b_items):  # in one top-k only: must tie the other list's last item
        s, last = (sa[item], b_scores[-1]) if item in sa else (sb[item], a_scores[-1])
        assert abs(s - last) < tol, (item, a_items, b_items)


# ------------------------------------------------------------------------------------------- batch results
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
