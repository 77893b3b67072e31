"""Shared fixtures of the vLLM tests: one tiny bundle, and at most ONE vLLM engine alive at any time.

A vLLM engine start costs about a minute on a 2-core CPU, so the session builds one tiny bundle (a
synthetic 150-item catalogue, a tiny random Llama with head_dim 32 — vLLM's CPU attention has no kernel
for head_dim 16) and shares engines: an offline ``vllm.LLM`` (batch generation and parity tests) and one
HTTP server subprocess (server tests). The :class:`EngineSlot` closes whichever engine is open before
another starts; with the test files run in name order (explain, generate, parity, scoring, server) each starts
once: ``test_explain.py`` uses a second tiny bundle trained with the explain task, ``test_scoring.py`` one with
atomic IDs, each on its own offline engine.
The ``slow`` fixtures do the same with a SmolLM2-135M bundle (trained with the explain task mixed in).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from vllm_helpers import API_KEY, SMOLLM2, TIE_TOL, assert_same_topk, read_jsonl, write_jsonl  # noqa: F401

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_ITEMS = 150
N_USERS = 48


# ------------------------------------------------------------------------------------------- data / bundles
def write_catalogue(folder: Path, seed: int = 0) -> Path:
    """A synthetic catalogue: titles with the awkward cases (prefixes, duplicates, quotes, digits)."""
    rng = np.random.default_rng(seed)
    tricky = ["Heat", "Heat Wave", "Heat", 'The "Quoted" One', "2001", "200"]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.jsonl", "w") as f:
        for i in range(N_ITEMS):
            title = tricky[i] if i < len(tricky) else f"Item {i} ({1950 + i % 50})"
            f.write(json.dumps({"item_id": f"i{i}", "title": title, "genre": f"g{i % 5}"}) + "\n")
    with open(folder / "inter.csv", "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(N_USERS):
            items = rng.choice(N_ITEMS, size=int(rng.integers(8, 30)), replace=False)
            for pos, i in enumerate(items):
                f.write(f"u{u},i{i},{1000 * u + pos}\n")
        for i in range(N_ITEMS):  # every item interacted with at least once
            f.write(f"u{i % N_USERS},i{i},{10_000_000 + i}\n")
    return folder


def prepare_data(tmp: Path) -> str:
    from generative_rec.data.prepare import PrepareConfig, prepare

    src = write_catalogue(tmp / "raw")
    out = prepare(
        PrepareConfig(
            source="table",
            output=str(tmp / "data"),
            attribute_field="genre",
            table={
                "path": str(src / "inter.csv"),
                "items_path": str(src / "items.jsonl"),
                "item_fields": ["genre"],
            },
        )
    )
    return str(out)


def train_bundle(
    tmp: Path,
    data: str,
    base: str,
    steps: int,
    scheme: str = "sequential",
    tasks: dict | None = None,
    train_options: dict | None = None,
    prompt_options: dict | None = None,
) -> Path:
    import yaml

    from generative_rec.config import load_config
    from generative_rec.training import train

    cfg = {
        "data": {"path": data},
        "index": {"scheme": scheme},
        "model": {"base": base, "tiny": {"hidden": 64, "layers": 2, "heads": 2, "vocab": 400}},
        "lora": {"r": 4, "alpha": 8},
        "prompts": {"tasks": tasks or {"next_item": 1.0}, **(prompt_options or {})},
        "train": {
            "max_steps": steps,
            "batch_size": 4,
            "save_every": 0,
            "eval_users": 2,
            **(train_options or {}),
        },
        "output": str(tmp / "bundle"),
    }
    (tmp / "run.yaml").write_text(yaml.safe_dump(cfg))
    return Path(train(load_config(tmp / "run.yaml"), overwrite=True))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    return prepare_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_data) -> Path:
    return train_bundle(tmp_path_factory.mktemp("tiny"), tiny_data, "tiny-random", steps=4)


@pytest.fixture(scope="session")
def atomic_bundle(tmp_path_factory, tiny_data) -> Path:
    """The same catalogue with atomic IDs: one new token per item, so the trie's root has 150 children —
    more than one ``logprob_token_ids`` request could score (vLLM caps those at 128)."""
    return train_bundle(tmp_path_factory.mktemp("tiny-atomic"), tiny_data, "tiny-random", steps=4, scheme="atomic")


@pytest.fixture(scope="session")
def aligned_bundle(tmp_path_factory, tiny_data) -> Path:
    """``tiny_bundle`` trained with block-aligned prompts (``prompts.align: 32``, vLLM's CPU block size)."""
    return train_bundle(tmp_path_factory.mktemp("tiny-aligned"), tiny_data, "tiny-random", steps=4,
                        prompt_options={"align": 32})


@pytest.fixture(scope="session")
def explain_bundle(tmp_path_factory, tiny_data) -> Path:
    """A tiny bundle trained WITH the explain task (the synthetic items carry a genre attribute, which the
    templated reasons cite). 30 steps at lr 1e-2 (~3 s): after the 4 steps of ``tiny_bundle`` the random
    model's greedy explanation is newlines only (empty after clean-up), which would make text parity vacuous;
    here it is non-empty, with top-2 logit gaps > 0.1 along the greedy path (far from fp32 near-ties)."""
    return train_bundle(
        tmp_path_factory.mktemp("tiny-explain"),
        tiny_data,
        "tiny-random",
        steps=30,
        tasks={"next_item": 1.0, "explain": 0.5},
        train_options={"lr": 1e-2},
    )


@pytest.fixture(scope="session")
def users(tiny_data) -> list[dict]:
    """Request bodies for every user of the synthetic data: history as item ids (the last 25)."""
    from generative_rec.data import RecData

    d = RecData(tiny_data)
    return [
        {"user_id": d.user_ids[u], "history": [d.item_ids[i] for i in d.history(u, "test")[-25:]]}
        for u in range(d.num_users)
    ]


# ------------------------------------------------------------------------------------------- engines
class EngineSlot:
    """At most one vLLM engine at a time: opening one closes the other first."""

    def __init__(self):
        self.name: str | None = None
        self.closer: Callable[[], None] | None = None

    def take(self, name: str, closer: Callable[[], None] | None = None) -> None:
        if self.name is not None and self.name != name:
            self.release()
        self.name, self.closer = name, closer

    def release(self) -> None:
        if self.closer is not None:
            self.closer()
        self.name, self.closer = None, None


_SLOT = EngineSlot()


@pytest.fixture(scope="session")
def engine_slot():
    yield _SLOT
    _SLOT.release()


class LazyLLM:
    """An offline ``vllm.LLM`` for a bundle, (re)opened on demand through the slot."""

    def __init__(self, bundle_path: Path, slot: EngineSlot, name: str):
        self.bundle_path, self.slot, self.name, self._llm = bundle_path, slot, name, None

    def get(self):
        if self._llm is None:
            from generative_rec.bundle import Bundle
            from generative_rec.decoding.vllm_engine import EngineOptions, open_llm

            self.slot.take(self.name, self.close)
            self._llm = open_llm(Bundle(self.bundle_path), EngineOptions(max_model_len=1024))
        else:
            self.slot.take(self.name, self.close)
        return self._llm

    def close(self) -> None:
        if self._llm is not None:
            from generative_rec.decoding.vllm_engine import close_llm

            close_llm(self._llm)
            self._llm = None
            import gc

            gc.collect()


@pytest.fixture(scope="session")
def tiny_llm(tiny_bundle, engine_slot) -> LazyLLM:
    lazy = LazyLLM(tiny_bundle, engine_slot, "tiny-llm")
    yield lazy
    lazy.close()


@pytest.fixture(scope="session")
def atomic_llm(atomic_bundle, engine_slot) -> LazyLLM:
    lazy = LazyLLM(atomic_bundle, engine_slot, "atomic-llm")
    yield lazy
    lazy.close()


@pytest.fixture(scope="session")
def aligned_llm(aligned_bundle, engine_slot) -> LazyLLM:
    lazy = LazyLLM(aligned_bundle, engine_slot, "aligned-llm")
    yield lazy
    lazy.close()


@pytest.fixture(scope="session")
def explain_llm(explain_bundle, engine_slot) -> LazyLLM:
    lazy = LazyLLM(explain_bundle, engine_slot, "explain-llm")
    yield lazy
    lazy.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``genrec serve`` in a subprocess (its own process group), ready once ``/health`` answers."""

    def __init__(self, bundle: Path, log: Path, api_key: str = API_KEY, extra: list[str] | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.bundle, self.log_path, self.api_key = bundle, log, api_key
        cmd = [
            sys.executable,
            "-m",
            "generative_rec.cli",
            "serve",
            "--bundle",
            str(bundle),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api-key",
            api_key,
            "--max-model-len",
            "1024",
            *(extra or []),
        ]
        self.log = open(log, "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 420) -> Server:
        import httpx

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def client(self, api_key: str | None = None):
        import openai

        return openai.OpenAI(
            base_url=f"{self.base}/v1", api_key=api_key or self.api_key, max_retries=0, timeout=300
        )

    def post(self, path: str, body=None, api_key: str | None = None, content: bytes | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {api_key or self.api_key}"}
        if content is not None:
            return httpx.post(
                self.base + path,
                content=content,
                headers={**headers, "Content-Type": "application/json"},
                timeout=300,
            )
        return httpx.post(self.base + path, json=body, headers=headers, timeout=300)


@pytest.fixture(scope="session")
def tiny_server(tiny_bundle, engine_slot, batch_results, tmp_path_factory) -> Server:
    engine_slot.release()  # close the offline engine first: one engine at a time
    srv = Server(tiny_bundle, tmp_path_factory.mktemp("server") / "server.log")
    engine_slot.take("tiny-server", srv.stop)
    yield srv.wait_ready()
    srv.stop()


# ------------------------------------------------------------------------------------------- slow: SmolLM2
@pytest.fixture(scope="session")
def smol_bundle(tmp_path_factory, tiny_data, smollm2_dir) -> Path:
    assert smollm2_dir == SMOLLM2, (smollm2_dir, SMOLLM2)  # the LoRA test serves the adapter on SMOLLM2
    # trained with the explain task too, so the slow server test covers `"explain": true`
    return train_bundle(
        tmp_path_factory.mktemp("smol"),
        tiny_data,
        "smollm2-135m",
        steps=2,
        tasks={"next_item": 1.0, "explain": 0.2},
    )


@pytest.fixture(scope="session")
def smol_server(smol_bundle, engine_slot, tmp_path_factory) -> Server:
    engine_slot.release()
    srv = Server(smol_bundle, tmp_path_factory.mktemp("smol-server") / "server.log")
    engine_slot.take("smol-server", srv.stop)
    yield srv.wait_ready()
    srv.stop()


# ------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="session")
def batch_results(tiny_bundle, tiny_llm, users, tmp_path_factory) -> dict:
    """``genrec generate`` output (k=10, history excluded) for every user: user_id -> record.

    The server fixture depends on this one, so batch results always exist before the server starts
    (the offline engine is closed then) and server-vs-batch tests need no second offline engine."""
    from generative_rec.generate import GenerateOptions, generate

    tmp = tmp_path_factory.mktemp("batch")
    o = GenerateOptions(
        bundle=str(tiny_bundle),
        input=str(write_jsonl(tmp / "users.jsonl", users)),
        output=str(tmp / "recs.jsonl"),
        k=10,
        batch_size=16,
    )
    generate(o, llm=tiny_llm.get(), progress=False)
    return {r["user_id"]: r for r in read_jsonl(tmp / "recs.jsonl")}
