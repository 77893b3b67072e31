"""The item-ID contract of every scheme with the real SmolLM2 tokenizer (tests/unit/test_indexing.py checks the
same contract with a byte-level BPE trained in milliseconds; its catalogue, options and checks are reused)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from generative_rec.indexing import SCHEMES, IndexConfig, build_index

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_indexing import check_contract, data, embeddings_file, options  # noqa: E402, F401  (fixtures too)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_scheme_contract_smollm2_tokenizer(scheme, data, embeddings_file, smollm2_dir):  # noqa: F811
    from transformers import AutoTokenizer

    index = build_index(data, IndexConfig(scheme=scheme, options=options(scheme, embeddings_file)))
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    tok.add_tokens(index.new_tokens)
    check_contract(index, data, tok)
