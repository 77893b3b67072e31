"""``genrec serve``: a bundle behind vLLM's OpenAI-compatible server plus ``POST /v1/recommendations``."""

from __future__ import annotations

import argparse


def add_engine_args(s: argparse.ArgumentParser) -> None:
    """Engine flags shared by ``genrec serve`` and ``genrec generate``."""
    s.add_argument("--max-model-len", dest="max_model_len", type=int, default=1024,
                   help="longest prompt + completion in tokens (default 1024)")
    s.add_argument("--kv-cache-gb", dest="kv_cache_gb", type=float, default=None,
                   help="KV-cache size in GiB (CPU: VLLM_CPU_KVCACHE_SPACE, default 1; GPU: --kv-cache-memory-bytes)")
    s.add_argument("--tensor-parallel-size", dest="tensor_parallel_size", type=int, default=1)
    s.add_argument("--max-num-seqs", dest="max_num_seqs", type=int, default=None,
                   help="most sequences per engine step (vLLM's default when unset)")
    s.add_argument("--dtype", default="float32", help="float32 (parity with the HF reference) | bfloat16 | float16")
    s.add_argument("--enable-lora", dest="enable_lora", action="store_true",
                   help="serve the bundle's LoRA adapter on its base model instead of the merged model "
                        "(only for item indexes that add no tokens)")
    s.add_argument("--base-model", dest="base_model", help="with --enable-lora: the base model folder")
    s.add_argument("--max-lora-rank", dest="max_lora_rank", type=int, default=64)
    s.add_argument("--max-logprobs", dest="max_logprobs", type=int, default=None,
                   help="widest top-W a scoring request may ask for, plus one (default 512; serve: at least "
                        "200 + --max-k; generate: at least what the input's k and num_beams need)")


def engine_options(a):
    from generative_rec.decoding.vllm_engine import DEFAULT_MAX_LOGPROBS, EngineOptions

    return EngineOptions(max_model_len=a.max_model_len, kv_cache_gb=a.kv_cache_gb,
                         tensor_parallel_size=a.tensor_parallel_size, dtype=a.dtype, enable_lora=a.enable_lora,
                         max_lora_rank=a.max_lora_rank, base_model=a.base_model, max_num_seqs=a.max_num_seqs,
                         max_logprobs=a.max_logprobs or DEFAULT_MAX_LOGPROBS)


def cmd_serve(a) -> None:
    from generative_rec.serving.launch import ServeOptions, serve

    extra = list(a.vllm_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    serve(ServeOptions(bundle=a.bundle, host=a.host, port=a.port, api_key=a.api_key,
                       served_model_name=a.served_model_name, engine=engine_options(a), max_k=a.max_k,
                       max_concurrency=a.max_concurrency, watch_catalogue=a.watch_catalogue, vllm_args=extra))


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "serve", help="serve a bundle: vLLM's OpenAI-compatible server + POST /v1/recommendations",
        description="Start vLLM's OpenAI-compatible server for a bundle (trie-constrained completions via "
                    "vllm_xargs, POST /v1/recommendations). Flags after `--` go to vLLM unchanged.")
    s.add_argument("--bundle", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", dest="api_key", help="require this key (Authorization: Bearer KEY) on /v1/*")
    s.add_argument("--served-model-name", dest="served_model_name", default="genrec")
    s.add_argument("--max-k", dest="max_k", type=int, default=100, help="largest k a request may ask for")
    s.add_argument("--max-concurrency", dest="max_concurrency", type=int, default=64,
                   help="recommendation requests decoded at once; more wait in a queue")
    s.add_argument("--watch-catalogue", dest="watch_catalogue", type=float, default=None, metavar="SECONDS",
                   help="reload the bundle's catalogue when `genrec catalogue` changed it, checking every SECONDS "
                        "(always available: POST /v1/admin/catalogue/reload)")
    add_engine_args(s)
    s.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then extra vLLM server flags")
    s.set_defaults(fn=cmd_serve)
