"""Trie-constrained top-K on vLLM: a :class:`~generative_rec.decoding.beam.Scorer` over vLLM engines.

The beam search itself is ``decoding.beam.constrained_beam_search`` — the same code the HF decoder runs —
so the two engines cannot disagree about the algorithm, only about log-probabilities. vLLM's own beam
search ignores custom logits processors, so this module only asks vLLM for what the search needs.

**One engine request per beam per step, whatever the fan-out.** A *scoring request* has prompt
``prompt + beam.tokens``, is greedy, and opts in to the trie processor's top-W scoring mode
(``vllm_xargs.genrec_score``, ``decoding.vllm_processor``): inside the engine the processor rewrites the
row to the model's full-vocabulary log-softmax on the live (trie-allowed, not excluded) children and
``-inf`` elsewhere — keeping the rest of the probability mass on one sink token, so the row still sums to
one — and the engine, running with ``logprobs_mode=processed_logprobs``, returns the ``W+1`` best entries.
Those are the W best allowed continuations with exactly the log-probabilities HF beam search adds up
(masking, not renormalising); W is :func:`~generative_rec.decoding.topk.needed_width` (k for atomic IDs,
the beam width for multi-token IDs), never the fan-out. So

- single-token (atomic) IDs: one request, one forward pass per recommendation, top-K straight from the
  masked distribution (the search takes one step and stops);
- multi-token IDs: at most ``beams x depth`` requests per recommendation. The prompt is prefilled once by
  the first request; later requests reuse its KV blocks through prefix caching (32-token blocks). Each
  request also *looks ahead*: it decodes greedily along the best allowed child to the end of the ID,
  scoring every position on the way with the KV of the previous one, and the search's next steps take
  those scores instead of sending new requests (the best child of every beam that keeps any child is
  always kept). Only the other survivors cost a request, which recomputes the prompt's last partial
  KV block plus its ID tokens (vLLM caches whole blocks only).

Continuous batching puts the requests of all concurrent recommendations into the same engine steps.

- :func:`llm_topk` drives an offline ``vllm.LLM`` (one ``generate`` call per step for a window of users);
- :class:`AsyncTopK` drives an ``AsyncLLM`` / engine client (the server): the synchronous search runs in a
  worker thread whose steps await the engine on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from generative_rec.decoding.beam import Beam, Ranked, SearchStats, constrained_beam_search
from generative_rec.decoding.topk import Candidates, max_width, node_depth
from generative_rec.prompts import KV_BLOCK
from generative_rec.trie import Trie

DEFAULT_BLOCK_SIZE = KV_BLOCK  # prefix caching reuses whole blocks; CPU attention needs multiples of 32
DEFAULT_MAX_LOGPROBS = 512  # the widest top-W a request may ask for, plus vllm_processor.LOGPROBS_EXTRA


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
    max_logprobs: int = DEFAULT_MAX_LOGPROBS  # >= the widest top-W (num_beams + k - 1) plus one


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
    from generative_rec.decoding.vllm_processor import FQCN, LOGPROBS_MODE

    kw: dict[str, Any] = dict(
        model=base_model_for(bundle, opts), tokenizer=str(bundle.model_dir), dtype=opts.dtype,
        max_model_len=opts.max_model_len, enable_prefix_caching=True, block_size=opts.block_size,
        enforce_eager=opts.enforce_eager, seed=opts.seed, tensor_parallel_size=opts.tensor_parallel_size,
        logits_processors=[FQCN], logprobs_mode=LOGPROBS_MODE, max_logprobs=opts.max_logprobs,
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
    # Offline, this process only runs the beam search between engine steps (the engine waits meanwhile): give
    # the engine's model worker every core instead of keeping one for a frontend (CPU backend; 2x on 2 cores).
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    from vllm import LLM

    # The processor finds the trie through GENREC_BUNDLE, in the engine process and (validation) in this one.
    os.environ["GENREC_BUNDLE"] = str(bundle.path)
    return LLM(**llm_kwargs(bundle, opts))


def close_llm(llm) -> None:
    """Shut an offline engine's processes down now (rather than at garbage collection)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


# --------------------------------------------------------------------------- engine checks
def check_engine(model_config, width: int) -> None:
    """Refuse an engine that cannot serve top-W scoring requests of ``width`` (ConfigError says why)."""
    from generative_rec.decoding.vllm_processor import LOGPROBS_EXTRA, LOGPROBS_MODE
    from generative_rec.errors import ConfigError

    mode = getattr(model_config, "logprobs_mode", None)
    if mode != LOGPROBS_MODE:
        raise ConfigError(f"the vLLM engine runs with logprobs_mode={mode!r}; trie-constrained top-K needs "
                          f"{LOGPROBS_MODE!r} (genrec serve / open_llm set it)")
    cap = getattr(model_config, "max_logprobs", None)
    if cap is not None and cap != -1 and cap < width + LOGPROBS_EXTRA:
        raise ConfigError(f"top-{width} scoring needs the engine's max_logprobs >= {width + LOGPROBS_EXTRA} (it is {cap}); "
                          "raise --max-logprobs or lower k / num_beams")


def model_config_of(engine):
    """The ``ModelConfig`` of an offline ``vllm.LLM`` or an async engine client."""
    cfg = getattr(engine, "model_config", None)
    if cfg is None:
        cfg = engine.llm_engine.model_config
    return cfg


# --------------------------------------------------------------------------- scoring requests
def scoring_params(width: int, prefix: Sequence[int], exclude: list[str] | None, max_tokens: int = 1,
                   catalogue_version: int | None = None):
    """A top-``width`` scoring request after the ID tokens ``prefix`` (``max_tokens > 1``: look ahead), under
    catalogue version ``catalogue_version`` (None: whichever is newest when the engine gets it)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from generative_rec.decoding.vllm_processor import LOGPROBS_EXTRA, scoring_args

    return SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=width + LOGPROBS_EXTRA, flat_logprobs=True,
                          detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY,
                          extra_args=scoring_args(prefix, exclude, catalogue_version))


def read_positions(request_output) -> tuple[list[int], list[tuple[np.ndarray, np.ndarray]]]:
    """Generated tokens and, per generated position, the returned ``(token ids, log-probs)``."""
    o = request_output.outputs[0]
    lp = o.logprobs
    out = []
    if hasattr(lp, "start_indices"):  # FlatLogprobs
        tids, vals = np.asarray(lp.token_ids, dtype=np.int64), np.asarray(lp.logprobs, dtype=np.float32)
        for lo, hi in zip(lp.start_indices, lp.end_indices, strict=True):
            out.append((tids[lo:hi], vals[lo:hi]))
    else:
        for d in lp or []:
            out.append((np.fromiter(d.keys(), dtype=np.int64, count=len(d)),
                        np.asarray([v.logprob for v in d.values()], dtype=np.float32)))
    return list(o.token_ids), out


Run = Callable[[list[tuple[list[int], Any]]], list[Any]]  # [(prompt ids, SamplingParams)] -> RequestOutputs


class EngineScorer:
    """:class:`~generative_rec.decoding.beam.Scorer` over a vLLM engine: sparse top-W steps.

    ``run`` sends a step's scoring requests to the engine and returns their final outputs in order (offline:
    one ``LLM.generate``; server: the async engine through the event loop). Each beam whose prefix no earlier
    request has scored gets one request; what a request scored along its greedy look-ahead path is kept for
    the following steps. ``exclude``: catalogue rows per prompt (masked inside the engine; ``item_ids`` maps
    them to the catalogue ids the processor takes). ``catalogue_version``: the version every request names
    (the processor then uses that version's trie); ``hidden``: rows that version hides, which the processor
    excludes by itself (they may be in ``exclude`` and are not sent).
    """

    def __init__(self, run: Run, trie: Trie, item_ids: Sequence[str], k: int, num_beams: int | None = None,
                 exclude: Sequence[Iterable[int] | None] | None = None, lookahead: bool = True,
                 catalogue_version: int | None = None, hidden: frozenset[int] = frozenset()):
        self.run, self.trie, self.item_ids = run, trie, item_ids
        self.catalogue_version, self.hidden = catalogue_version, hidden
        self.k, self.num_beams = k, max(k, num_beams or k)
        self.width = max_width(trie, self.k, self.num_beams)
        self.exclude = [None if e is None else sorted({int(x) for x in e}) for e in (exclude or [])]
        self.lookahead = lookahead
        self.requests = 0
        self.positions = 0

    def start(self, prompts: Sequence[Sequence[int]]) -> None:
        self.prompts = [list(p) for p in prompts]
        if len(self.exclude) < len(self.prompts):
            self.exclude += [None] * (len(self.prompts) - len(self.exclude))
        self.ids = [[self.item_ids[r] for r in e if r not in self.hidden] if e else None for e in self.exclude]
        self.scored: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def params_for(self, beam: Beam):
        depth = node_depth(self.trie, beam.node)
        ahead = self.trie.max_depth - depth if self.lookahead else 1
        return scoring_params(self.width, beam.tokens, self.ids[beam.prompt], max(1, ahead), self.catalogue_version)

    def step(self, beams: Sequence[Beam]) -> Candidates:
        todo = [r for r, b in enumerate(beams) if (b.prompt, b.tokens) not in self.scored]
        if todo:
            outs = self.run([(self.prompts[beams[r].prompt] + list(beams[r].tokens), self.params_for(beams[r]))
                             for r in todo])
            self.requests += len(todo)
            for r, out in zip(todo, outs, strict=True):
                self._keep(beams[r], out)
        parts = []
        for r, b in enumerate(beams):
            toks, lps = self.scored.pop((b.prompt, b.tokens))
            parts.append((r, toks, lps))
        return Candidates.concat(parts)

    def _keep(self, beam: Beam, out) -> None:
        """Store the scores of every position the request reached while still inside an unfinished ID."""
        generated, positions = read_positions(out)
        prefix, node = beam.tokens, beam.node
        for j, (toks, lps) in enumerate(positions):
            self.scored[(beam.prompt, prefix)] = (toks, lps)
            self.positions += 1
            if j >= len(generated):
                break
            node = self.trie.child(node, int(generated[j]))
            if node < 0 or self.trie.is_leaf(node):
                break
            prefix = prefix + (int(generated[j]),)
        if (beam.prompt, beam.tokens) not in self.scored:  # an engine that returned nothing for the request
            self.scored[(beam.prompt, beam.tokens)] = (np.zeros(0, np.int64), np.zeros(0, np.float32))


def search_topk(scorer: EngineScorer, prompts: Sequence[Sequence[int]], trie: Trie, k: int,
                num_beams: int | None, exclude, stats: SearchStats | None) -> list[Ranked]:
    """The beam search over an :class:`EngineScorer`; its request counts go into ``stats.extra``."""
    stats = stats if stats is not None else SearchStats()
    try:
        return constrained_beam_search(scorer, prompts, trie, k, num_beams, exclude, stats=stats)
    finally:
        stats.extra["requests"] = stats.extra.get("requests", 0) + scorer.requests
        stats.extra["positions"] = stats.extra.get("positions", 0) + scorer.positions


# --------------------------------------------------------------------------- offline (vllm.LLM)
def llm_run(llm, lora_request=None) -> Run:
    """``run`` for an offline ``vllm.LLM``: one ``generate`` call for a step's requests."""
    from vllm.inputs import TokensPrompt

    def run(reqs):
        return llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in reqs], [p for _, p in reqs],
                            use_tqdm=False, lora_request=lora_request)

    return run


def llm_topk(llm, trie: Trie, prompts: Sequence[Sequence[int]], k: int, num_beams: int | None = None,
             exclude: Sequence[Iterable[int] | None] | None = None, batch_size: int = 64, lora_request=None,
             stats: SearchStats | None = None, *, item_ids: Sequence[str], lookahead: bool = True,
             catalogue_version: int | None = None, hidden: frozenset[int] = frozenset()) -> list[Ranked]:
    """Top-``k`` per prompt through an offline ``vllm.LLM``, ``batch_size`` prompts per beam search
    (``catalogue_version``, ``hidden``: see :class:`EngineScorer`)."""
    check_engine(model_config_of(llm), max_width(trie, k, max(k, num_beams or k)))
    out: list[Ranked] = []
    excl = list(exclude) if exclude is not None else [None] * len(prompts)
    run = llm_run(llm, lora_request)
    for lo in range(0, len(prompts), batch_size):
        scorer = EngineScorer(run, trie, item_ids, k, num_beams, excl[lo: lo + batch_size], lookahead,
                              catalogue_version, hidden)
        out += search_topk(scorer, prompts[lo: lo + batch_size], trie, k, num_beams, excl[lo: lo + batch_size], stats)
    return out


# --------------------------------------------------------------------------- online (AsyncLLM)
_ids = itertools.count()


def next_request_id(kind: str = "score") -> str:
    """A request id unique in this process (vLLM needs one per request)."""
    return f"genrec-{kind}-{os.getpid()}-{next(_ids)}"


class AsyncTopK:
    """Constrained top-K from async code (the server), sharing one engine with everything else.

    The search loop (``constrained_beam_search``) runs in a worker thread; each of its steps submits the
    step's scoring requests to the engine on the event loop and waits. Concurrent recommendation requests
    thus feed the engine's continuous batching together. ``max_concurrency`` bounds the worker threads.
    """

    def __init__(self, engine, trie: Trie, item_ids: Sequence[str], lora_request=None, max_concurrency: int = 64,
                 lookahead: bool = True):
        self.engine, self.trie, self.item_ids, self.lora_request = engine, trie, item_ids, lora_request
        self.lookahead = lookahead
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="genrec-beam")

    def check(self, max_k: int, max_beams: int, trie: Trie | None = None) -> None:
        """Fail at start-up (or a catalogue reload), not at the first request, if the engine cannot score that
        wide over ``trie`` (default: the one given at construction)."""
        check_engine(model_config_of(self.engine), max_width(trie or self.trie, max_k, max(max_k, max_beams)))

    async def _one(self, ids: list[int], params) -> Any:
        from vllm.inputs import TokensPrompt

        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params, next_request_id(),
                                              lora_request=self.lora_request):
            final = out  # FINAL_ONLY: a single output
        return final

    async def _all(self, reqs) -> list[Any]:
        return list(await asyncio.gather(*(self._one(ids, p) for ids, p in reqs)))

    async def topk(self, prompts: Sequence[Sequence[int]], k: int, num_beams: int | None = None,
                   exclude: Sequence[Iterable[int] | None] | None = None,
                   stats: SearchStats | None = None, catalogue=None) -> list[Ranked]:
        """Top-``k`` per prompt; ``catalogue`` (a :class:`~generative_rec.bundle.Bundle`, optional) replaces
        the trie and item ids given at construction for this call, and every engine request names its
        catalogue version and leaves its hidden rows to the processor."""
        trie, item_ids = (self.trie, self.item_ids) if catalogue is None else (catalogue.trie, catalogue.item_ids)
        version = None if catalogue is None else catalogue.catalogue_version
        hidden = frozenset() if catalogue is None else catalogue.hidden
        loop = asyncio.get_running_loop()
        stats = stats if stats is not None else SearchStats()
        stats.extra.setdefault("engine_s", 0.0)

        def run(reqs):  # called from the search thread: wait for the event loop's engine calls
            t0 = time.perf_counter()
            try:
                return asyncio.run_coroutine_threadsafe(self._all(reqs), loop).result()
            finally:
                stats.extra["engine_s"] += time.perf_counter() - t0

        scorer = EngineScorer(run, trie, item_ids, k, num_beams, exclude, self.lookahead, version, hidden)
        return await loop.run_in_executor(self.pool, search_topk, scorer, prompts, trie, k, num_beams,
                                          exclude, stats)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
