"""Trie-constrained top-K on vLLM: a :class:`~generative_rec.decoding.beam.Scorer` over vLLM engines.

The beam search itself is ``decoding.beam.constrained_beam_search`` — the same code the HF decoder runs —
so the two engines cannot disagree about the algorithm, only about log-probabilities. vLLM's own beam
search ignores custom logits processors, so this module only asks vLLM for what the search needs:

One *scoring request* per live beam per step: prompt = ``prompt + beam.tokens``, ``max_tokens=1``,
``logprob_token_ids = the trie children of the beam's node``. With the default ``logprobs_mode``
(``raw_logprobs``) vLLM gathers those ids from the full-vocabulary ``log_softmax`` of the raw logits —
exactly the number HF beam search adds up (masking, not renormalising). vLLM caps the list at 128 ids, so a
node with more children (atomic IDs at the root, large codebooks) is scored by several requests with the
same prompt; prefix caching makes them cheap. Prefix caching (``block_size=32``) reuses the prompt's KV
blocks for every beam of every step; continuous batching puts the steps of all concurrent requests into
the same engine forward passes.

- :class:`LLMScorer` drives an offline ``vllm.LLM`` (one ``generate`` call per step for all prompts);
  :func:`llm_topk` runs it over many prompts in chunks (``genrec generate``).
- :class:`AsyncEngineScorer` drives an ``AsyncLLM`` / engine client (the server); :class:`AsyncTopK`
  runs the synchronous search in a worker thread whose ``step`` awaits the engine on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from generative_rec.decoding.beam import Beam, Ranked, SearchStats, constrained_beam_search
from generative_rec.trie import Trie

# vLLM's cap on SamplingParams.logprob_token_ids (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS; a test checks
# it). Not imported here: importing vLLM takes seconds and this module is imported by the CLI.
MAX_IDS_PER_REQUEST = 128

DEFAULT_BLOCK_SIZE = 32


# --------------------------------------------------------------------------- engine configuration
@dataclass
class EngineOptions:
    """The vLLM engine settings generative_rec cares about (same defaults offline and in the server)."""

    max_model_len: int = 1024
    kv_cache_gb: float | None = None  # CPU: VLLM_CPU_KVCACHE_SPACE; GPU: kv_cache_memory_bytes
    tensor_parallel_size: int = 1
    block_size: int = DEFAULT_BLOCK_SIZE
    dtype: str = "float32"
    enforce_eager: bool = True
    enable_lora: bool = False
    max_lora_rank: int = 64
    base_model: str | None = None  # with enable_lora: the base the adapter was trained on
    seed: int = 0
    max_num_seqs: int | None = None


def is_cpu_build() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def prepare_environment(opts: EngineOptions) -> None:
    """Environment the engine processes read at start: KV-cache size on CPU, the V1 runner on GPU."""
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # GPU: keep the V1 processor interface
    if opts.kv_cache_gb is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(opts.kv_cache_gb))))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def check_lora(bundle) -> None:
    from generative_rec.errors import ConfigError

    if bundle.index.new_tokens:
        raise ConfigError(f"the bundle's item index adds {len(bundle.index.new_tokens)} tokens; vLLM cannot "
                          "serve a LoRA adapter that adds tokens — serve the merged model (drop --enable-lora)")
    if not (bundle.adapter_dir / "adapter_config.json").exists():
        raise ConfigError(f"{bundle.adapter_dir} holds no peft adapter")


def base_model_for(bundle, opts: EngineOptions) -> str:
    """The model vLLM loads: the merged model, or (``enable_lora``) the base the adapter applies to."""
    if not opts.enable_lora:
        return str(bundle.model_dir)
    check_lora(bundle)
    from generative_rec.errors import ConfigError
    from generative_rec.modeling import resolve_model

    base = opts.base_model or bundle.manifest.get("base_model")
    if base in (None, "tiny-random"):
        raise ConfigError("--enable-lora needs the base model the adapter was trained on (--base-model DIR); "
                          f"the bundle's base is {base!r}, which is not saved")
    return resolve_model(base)


def adapter_rank(bundle) -> int:
    from generative_rec.io import read_json

    return int(read_json(bundle.adapter_dir / "adapter_config.json").get("r", 8))


def llm_kwargs(bundle, opts: EngineOptions) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for a bundle (the server passes the same as CLI flags)."""
    from generative_rec.decoding.vllm_processor import FQCN

    kw: dict[str, Any] = dict(
        model=base_model_for(bundle, opts), tokenizer=str(bundle.model_dir), dtype=opts.dtype,
        max_model_len=opts.max_model_len, enable_prefix_caching=True, block_size=opts.block_size,
        enforce_eager=opts.enforce_eager, seed=opts.seed, tensor_parallel_size=opts.tensor_parallel_size,
        logits_processors=[FQCN],
    )
    if opts.max_num_seqs:
        kw["max_num_seqs"] = opts.max_num_seqs
    if opts.kv_cache_gb is not None and not is_cpu_build():
        kw["kv_cache_memory_bytes"] = int(opts.kv_cache_gb * 2**30)
    if opts.enable_lora:
        kw.update(enable_lora=True, max_lora_rank=max(opts.max_lora_rank, adapter_rank(bundle)), max_loras=1)
    return kw


def lora_request_for(bundle, opts: EngineOptions, name: str = "genrec"):
    if not opts.enable_lora:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(name, 1, str(bundle.adapter_dir))


def open_llm(bundle, opts: EngineOptions | None = None):
    """An offline ``vllm.LLM`` for a bundle, with the trie processor registered and prefix caching on."""
    opts = opts or EngineOptions()
    prepare_environment(opts)
    from vllm import LLM

    # The processor finds the trie through GENREC_BUNDLE, in the engine process and (validation) in this one.
    os.environ["GENREC_BUNDLE"] = str(bundle.path)
    return LLM(**llm_kwargs(bundle, opts))


def close_llm(llm) -> None:
    """Shut an offline engine's processes down now (rather than at garbage collection)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


# --------------------------------------------------------------------------- scoring requests
def scoring_params(token_ids: Sequence[int]):
    """One scoring request: raw full-vocabulary log-probs of ``token_ids`` after the prompt."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=[int(t) for t in token_ids],
                          flat_logprobs=True, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)


def plan_step(prompts: Sequence[Sequence[int]], beams: Sequence[Beam], trie: Trie,
              limit: int = MAX_IDS_PER_REQUEST) -> list[tuple[int, list[int], np.ndarray]]:
    """``(beam row, prompt token ids, tokens to score)`` for every scoring request of one step."""
    out = []
    for row, b in enumerate(beams):
        kids = trie.allowed(b.node)
        if len(kids) == 0:
            continue
        ids = list(prompts[b.prompt]) + list(b.tokens)
        for lo in range(0, len(kids), limit):
            out.append((row, ids, kids[lo: lo + limit]))
    return out


def read_logprobs(request_output) -> tuple[list[int], list[float]]:
    """Token ids and log-probs of a finished scoring request (first generated position)."""
    lp = request_output.outputs[0].logprobs
    if hasattr(lp, "start_indices"):  # FlatLogprobs
        lo, hi = lp.start_indices[0], lp.end_indices[0]
        return lp.token_ids[lo:hi], lp.logprobs[lo:hi]
    d = lp[0]
    return list(d.keys()), [v.logprob for v in d.values()]


def scatter(n_rows: int, width: int, plan, results) -> torch.Tensor:
    """Dense ``[n_rows, width]`` log-probs: the scored tokens, ``-inf`` elsewhere (never read)."""
    out = torch.full((n_rows, width), -float("inf"), dtype=torch.float32)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for (row, _ids, _toks), (tids, lps) in zip(plan, results, strict=True):
        rows += [row] * len(tids)
        cols += tids
        vals += lps
    if rows:
        keep = [j for j, c in enumerate(cols) if c < width]
        out[torch.tensor([rows[j] for j in keep]), torch.tensor([cols[j] for j in keep])] = torch.tensor(
            [vals[j] for j in keep], dtype=torch.float32)
    return out


def score_width(trie: Trie) -> int:
    """Columns the dense step output needs: one past the largest token id in the trie."""
    return int(trie.token[1:].max()) + 1


# --------------------------------------------------------------------------- offline (vllm.LLM)
class LLMScorer:
    """:class:`~generative_rec.decoding.beam.Scorer` over an offline ``vllm.LLM``: one ``generate`` per step."""

    def __init__(self, llm, trie: Trie, lora_request=None):
        self.llm, self.trie, self.lora_request = llm, trie, lora_request
        self.width = score_width(trie)
        self.requests = 0

    def start(self, prompts: Sequence[Sequence[int]]) -> None:
        self.prompts = [list(p) for p in prompts]

    def step(self, beams: Sequence[Beam]) -> torch.Tensor:
        from vllm.inputs import TokensPrompt

        plan = plan_step(self.prompts, beams, self.trie)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for _, ids, _ in plan],
                                 [scoring_params(toks) for _, _, toks in plan], use_tqdm=False,
                                 lora_request=self.lora_request)
        self.requests += len(plan)
        return scatter(len(beams), self.width, plan, [read_logprobs(o) for o in outs])


def llm_topk(llm, trie: Trie, prompts: Sequence[Sequence[int]], k: int, num_beams: int | None = None,
             exclude: Sequence[Iterable[int] | None] | None = None, batch_size: int = 64, lora_request=None,
             stats: SearchStats | None = None) -> list[Ranked]:
    """Top-``k`` per prompt through an offline ``vllm.LLM``, ``batch_size`` prompts per beam search."""
    out: list[Ranked] = []
    excl = list(exclude) if exclude is not None else [None] * len(prompts)
    for lo in range(0, len(prompts), batch_size):
        scorer = LLMScorer(llm, trie, lora_request)
        out += constrained_beam_search(scorer, prompts[lo: lo + batch_size], trie, k, num_beams,
                                       excl[lo: lo + batch_size], stats=stats)
    return out


# --------------------------------------------------------------------------- online (AsyncLLM)
_ids = itertools.count()


def next_request_id(kind: str = "score") -> str:
    """A request id unique in this process (vLLM needs one per request)."""
    return f"genrec-{kind}-{os.getpid()}-{next(_ids)}"


class AsyncEngineScorer:
    """Scores one step's beams through an async engine client; all requests go in concurrently."""

    def __init__(self, engine, trie: Trie, lora_request=None):
        self.engine, self.trie, self.lora_request = engine, trie, lora_request
        self.width = score_width(trie)

    async def _one(self, ids: list[int], toks: np.ndarray) -> tuple[list[int], list[float]]:
        from vllm.inputs import TokensPrompt

        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), scoring_params(toks),
                                              next_request_id(),
                                              lora_request=self.lora_request):
            final = out  # FINAL_ONLY: a single output
        return read_logprobs(final)

    async def run(self, plan) -> list[tuple[list[int], list[float]]]:
        """Submit a step's scoring requests (``plan_step`` output) together; their results in order."""
        return await asyncio.gather(*(self._one(ids, toks) for _, ids, toks in plan))

    async def score(self, prompts: Sequence[Sequence[int]], beams: Sequence[Beam]) -> torch.Tensor:
        plan = plan_step(prompts, beams, self.trie)
        return scatter(len(beams), self.width, plan, await self.run(plan))


class _BridgeScorer:
    """The synchronous Scorer the search thread sees; each step waits for the event loop's engine calls.

    Trie work done here (planning the scoring requests, scattering their results) is added to
    ``stats.extra["trie_s"]``; the search adds its own candidate selection to ``stats.mask_seconds``.
    """

    def __init__(self, inner: AsyncEngineScorer, loop: asyncio.AbstractEventLoop, stats: SearchStats):
        self.inner, self.loop, self.stats = inner, loop, stats
        stats.extra.setdefault("trie_s", 0.0)
        stats.extra.setdefault("requests", 0)

    def start(self, prompts: Sequence[Sequence[int]]) -> None:
        self.prompts = [list(p) for p in prompts]

    def step(self, beams: Sequence[Beam]) -> torch.Tensor:
        t0 = time.perf_counter()
        plan = plan_step(self.prompts, beams, self.inner.trie)
        t1 = time.perf_counter()
        results = asyncio.run_coroutine_threadsafe(self.inner.run(plan), self.loop).result()
        t2 = time.perf_counter()
        out = scatter(len(beams), self.inner.width, plan, results)
        self.stats.extra["trie_s"] += (t1 - t0) + (time.perf_counter() - t2)
        self.stats.extra["requests"] += len(plan)
        return out


class AsyncTopK:
    """Constrained top-K from async code (the server), sharing one engine with everything else.

    The search loop (``constrained_beam_search``) runs in a worker thread; each of its steps submits the
    step's scoring requests to the engine on the event loop and waits. Concurrent recommendation requests
    thus feed the engine's continuous batching together. ``max_concurrency`` bounds the worker threads.
    """

    def __init__(self, engine, trie: Trie, lora_request=None, max_concurrency: int = 64):
        self.scorer = AsyncEngineScorer(engine, trie, lora_request)
        self.trie = trie
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="genrec-beam")

    async def topk(self, prompts: Sequence[Sequence[int]], k: int, num_beams: int | None = None,
                   exclude: Sequence[Iterable[int] | None] | None = None,
                   stats: SearchStats | None = None) -> list[Ranked]:
        loop = asyncio.get_running_loop()
        stats = stats if stats is not None else SearchStats()
        bridge = _BridgeScorer(self.scorer, loop, stats)
        return await loop.run_in_executor(self.pool, constrained_beam_search, bridge, prompts, self.trie, k,
                                          num_beams, exclude, stats)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
