"""Start vLLM's OpenAI-compatible HTTP server for a bundle, with the recommendations route attached.

The server is vLLM's own: its argument parser, engine client (``AsyncLLM``), FastAPI app (``build_app``),
app state (``init_app_state``, which sets up ``/v1/completions``, ``/v1/models``, ``/health``, ``--api-key``)
and uvicorn wrapper (``serve_http``). This module only

1. turns a bundle and a few options into vLLM's command-line arguments (merged model, trie logits
   processor, prefix caching with 32-token blocks, fp32), plus any extra vLLM flags passed through;
2. sets the environment the engine processes read (``GENREC_BUNDLE`` for the processor,
   ``VLLM_CPU_KVCACHE_SPACE`` on CPU, ``VLLM_USE_V2_MODEL_RUNNER=0`` on GPU — the processor uses the V1
   runner's interface);
3. mirrors vLLM's ``run_server`` -> ``build_and_serve`` with one addition: our router is included in the
   app and the recommendation service (sharing the engine client) is put into the app state; with
   ``watch_catalogue`` a task reloads the bundle's catalogue when its version changes (``catalogue.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from argparse import Namespace
from dataclasses import dataclass, field

from generative_rec.decoding.vllm_engine import (
    EngineOptions,
    adapter_rank,
    base_model_for,
    is_cpu_build,
    prepare_environment,
)
from generative_rec.decoding.vllm_processor import ENV_BUNDLE, FQCN, LOGPROBS_EXTRA, LOGPROBS_MODE
from generative_rec.serving.request import DEFAULT_MAX_K, MAX_BEAMS

log = logging.getLogger(__name__)

LORA_NAME = "genrec"


@dataclass
class ServeOptions:
    bundle: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    served_model_name: str = "genrec"
    engine: EngineOptions = field(default_factory=EngineOptions)
    max_k: int = DEFAULT_MAX_K
    max_concurrency: int = 64  # recommendation requests decoding at once (the rest wait)
    watch_catalogue: float | None = None  # seconds between checks for a new catalogue version (None: only the route)
    vllm_args: list[str] = field(default_factory=list)  # passed through to vLLM unchanged


def max_logprobs(so: ServeOptions) -> int:
    """The engine's ``--max-logprobs``: the widest top-W a recommendation may need (``num_beams + k - 1``,
    ``decoding.topk.needed_width``) plus one, and at least the configured default."""
    return max(so.engine.max_logprobs, MAX_BEAMS + so.max_k + LOGPROBS_EXTRA)


def check_vllm_args(args: Namespace) -> None:
    """Flags passed through after ``--`` must not undo what the recommendations route relies on."""
    from generative_rec.errors import ConfigError

    if getattr(args, "logprobs_mode", LOGPROBS_MODE) != LOGPROBS_MODE:
        raise ConfigError(f"--logprobs-mode {args.logprobs_mode}: genrec serve needs {LOGPROBS_MODE} (top-K "
                          "scoring reads the trie-masked log-probs from the engine); drop the flag")
    if getattr(args, "enable_prefix_caching", True) is False:
        log.warning("prefix caching is off: every scoring request will recompute its whole prompt")


def vllm_argv(bundle, so: ServeOptions) -> list[str]:
    """vLLM server flags for a bundle (``python -m vllm.entrypoints.openai.api_server`` accepts the same)."""
    e = so.engine
    argv = ["--model", base_model_for(bundle, e), "--tokenizer", str(bundle.model_dir),
            "--dtype", e.dtype, "--max-model-len", str(e.max_model_len),
            "--enable-prefix-caching", "--block-size", str(e.block_size),
            "--tensor-parallel-size", str(e.tensor_parallel_size), "--seed", str(e.seed),
            "--logits-processors", FQCN, "--logprobs-mode", LOGPROBS_MODE, "--max-logprobs", str(max_logprobs(so)),
            "--host", so.host, "--port", str(so.port),
            "--disable-uvicorn-access-log"]
    if e.enforce_eager:
        argv.append("--enforce-eager")
    if e.max_num_seqs:
        argv += ["--max-num-seqs", str(e.max_num_seqs)]
    if e.kv_cache_gb is not None and not is_cpu_build():
        argv += ["--kv-cache-memory-bytes", str(int(e.kv_cache_gb * 2**30))]
    if so.api_key:
        argv += ["--api-key", so.api_key]
    if e.enable_lora:
        argv += ["--served-model-name", f"{so.served_model_name}-base", "--enable-lora",
                 "--max-lora-rank", str(max(e.max_lora_rank, adapter_rank(bundle))),
                 "--lora-modules", f"{LORA_NAME if so.served_model_name == 'genrec' else so.served_model_name}"
                                   f"={bundle.adapter_dir}"]
    else:
        argv += ["--served-model-name", so.served_model_name]
    return argv + list(so.vllm_args)


def parse_vllm_args(argv: list[str]) -> Namespace:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="genrec serve (vLLM flags)"))
    args = parser.parse_args(argv)
    validate_parsed_serve_args(args)
    return args


async def run_server(bundle, so: ServeOptions, args: Namespace) -> None:
    """vLLM's ``run_server`` / ``build_and_serve``, plus our router and service on the same app."""
    import vllm.envs as envs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server
    from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config

    from generative_rec.serving.app import RecommendationService, attach

    listen_address, sock = setup_server(args, reuse_port=False)
    service, watch = None, None
    async with build_async_engine_client(args) as engine_client:
        supported_tasks = await engine_client.get_supported_tasks()
        app = build_app(args, supported_tasks, engine_client.model_config)
        attach(app)
        await init_app_state(engine_client, app.state, args, supported_tasks)
        lora_request = None
        if so.engine.enable_lora:
            lora_request = next(iter(app.state.openai_serving_models.lora_requests.values()))
        model_name = args.served_model_name[0] if not so.engine.enable_lora else lora_request.lora_name
        service = RecommendationService(bundle, engine_client, model_name, lora_request, max_k=so.max_k,
                                        max_concurrency=so.max_concurrency)
        app.state.genrec = service
        watch = asyncio.create_task(service.watch(so.watch_catalogue)) if so.watch_catalogue else None
        log.info("genrec: serving %s (%d items) as %r on %s", bundle.path, bundle.num_items, model_name,
                 listen_address)
        uvicorn_kwargs = {}
        log_config = get_uvicorn_log_config(args)
        if log_config is not None:
            uvicorn_kwargs["log_config"] = log_config
        shutdown_task = await serve_http(
            app, sock=sock, enable_ssl_refresh=args.enable_ssl_refresh, host=args.host, port=args.port,
            log_level=args.uvicorn_log_level, access_log=not args.disable_uvicorn_access_log,
            timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE, ssl_keyfile=args.ssl_keyfile,
            ssl_certfile=args.ssl_certfile, ssl_ca_certs=args.ssl_ca_certs, ssl_cert_reqs=args.ssl_cert_reqs,
            ssl_ciphers=args.ssl_ciphers, h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
            h11_max_header_count=args.h11_max_header_count, **uvicorn_kwargs)
    try:
        await shutdown_task
    finally:
        if watch is not None:
            watch.cancel()
        sock.close()
        if service is not None:
            service.close()


def serve(so: ServeOptions) -> None:
    """Run the server until interrupted (blocking). Call under ``if __name__ == "__main__":``."""
    from generative_rec.bundle import Bundle

    bundle = Bundle(so.bundle)
    prepare_environment(so.engine)
    os.environ[ENV_BUNDLE] = str(bundle.path.resolve())
    import uvloop
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup

    cli_env_setup()
    args = parse_vllm_args(vllm_argv(bundle, so))
    check_vllm_args(args)
    uvloop.run(run_server(bundle, so, args))
