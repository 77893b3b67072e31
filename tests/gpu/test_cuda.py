"""The GPU paths on a CUDA device: ``model.dtype: auto`` trains in bf16 under accelerate's mixed precision (what
train/configs/full_gpu.yaml asks for), and the bundle decodes on the GPU with the KV-cached decoder agreeing
with HF ``generate``.

Marked ``gpu``: where torch sees no CUDA device these tests are skipped with the reason in the summary
(tests/conftest.py), never deselected silently. ``pytest -m gpu`` on a GPU machine runs them (seconds).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import load_tiny

from generative_rec.bundle import Bundle, load_bundle_model
from generative_rec.data import RecData
from generative_rec.decoding.hf import hf_generate_topk, hf_topk
from generative_rec.modeling import pick_dtype
from generative_rec.training import train

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory, tiny_data):
    cfg = load_tiny(tiny_data, tmp_path_factory.mktemp("gpu-bundle") / "bundle", model={"dtype": "auto"},
                    train={"max_steps": 6})
    return train(cfg)


def test_auto_dtype_trains_in_bf16_on_the_gpu(gpu_bundle):
    assert torch.cuda.is_available()
    assert pick_dtype("auto") == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    m = json.loads((gpu_bundle / "metrics.json").read_text())
    assert m["train"]["steps"] == 6 and m["train"]["final_loss"] is not None
    assert math.isfinite(m["train"]["final_loss"])
    assert m["valid"]["Validity"] == 1.0  # validation decoded on the GPU, every item a catalogue item


def test_gpu_decoding_matches_hf_generate(gpu_bundle, tiny_data):
    b = Bundle(gpu_bundle)
    model = load_bundle_model(b)
    assert next(model.parameters()).device.type == "cuda"
    d = RecData(tiny_data)
    users = [0, 3, 7]
    prompts = [b.prompt_ids(d.history(u, "test")[-8:]) for u in users]
    excl = [d.history(u, "test") for u in users]
    with torch.inference_mode():
        fast = hf_topk(model, prompts, b.trie, k=5, pad_id=b.tokenizer.pad_token_id, exclude=excl)
        for p, e, f in zip(prompts, excl, fast, strict=True):
            ref = hf_generate_topk(model, p, b.trie, k=5, eos_id=b.tokenizer.eos_token_id, exclude=e)
            assert len(set(f.items)) == 5 and not set(f.items) & set(e)
            np.testing.assert_allclose(f.scores, ref.scores, atol=1e-3)  # position-wise: robust to near-ties
