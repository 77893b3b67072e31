"""``POST /v1/recommendations``: schemas, validation and the service behind it.

The router is attached to vLLM's own FastAPI app (``serving.launch``), so the route shares the engine
client with ``/v1/completions``, sits behind vLLM's ``--api-key`` middleware (every ``/v1`` path) and
appears in vLLM's OpenAPI document (``/docs``, ``/openapi.json``). Errors use vLLM's error body
(``{"error": {"message", "type", "param", "code"}}``): a bad request is HTTP 400 with a message that
says what is wrong, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from generative_rec.decoding.beam import SearchStats
from generative_rec.decoding.vllm_engine import AsyncTopK
from generative_rec.explain.vllm import make_explainer
from generative_rec.serving.request import (
    DEFAULT_MAX_K,
    MAX_BEAMS,
    MAX_HISTORY_ITEMS,
    RequestError,
    items_of,
    prepare,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024

ItemKey = StrictStr | StrictInt


# --------------------------------------------------------------------------- schemas
class RecommendationRequest(BaseModel):
    """A user's history (oldest first) -> the ``k`` catalogue items most likely to come next."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"history": ["50", "172", "Star Wars (1977)"], "k": 10, "exclude_history": True}]})

    history: list[ItemKey] = Field(
        ..., max_length=MAX_HISTORY_ITEMS,
        description="Items the user interacted with, oldest first: catalogue item ids, or exact titles. "
                    "The prompt shows the most recent `max_history` of them (bundle manifest).")
    k: StrictInt = Field(10, description="How many distinct items to return (1 .. catalogue size, and at "
                                         "most the server's --max-k).")
    exclude_history: StrictBool = Field(True, description="Never recommend an item of the history.")
    exclude: list[ItemKey] = Field(default_factory=list, max_length=MAX_HISTORY_ITEMS,
                                   description="Further item ids or titles never to recommend.")
    num_beams: StrictInt | None = Field(None, description=f"Beam width (default k; at least k, at most {MAX_BEAMS}).")
    explain: StrictBool = Field(False, description="Also return a one-line explanation per item (needs a bundle "
                                                   "trained with an `explain` template; otherwise HTTP 400).")


class RecommendedItem(BaseModel):
    item_id: str = Field(description="Catalogue item id.")
    title: str
    score: float = Field(description="Sequence log-probability of the item's ID tokens under the model "
                                     "(sum of full-vocabulary log-softmax; higher is better).")
    explanation: str | None = Field(None, description="Present only when `explain` was requested.")


class DecodeInfo(BaseModel):
    steps: int = Field(description="Beam-search steps (ID tokens decoded).")
    beams_scored: int = Field(description="Beam rows scored over all steps.")
    engine_requests: int = Field(description="Scoring requests sent to the engine (one per beam that an earlier "
                                             "request's look-ahead had not already scored).")
    seconds: float = Field(description="Decoding wall time.")
    engine_seconds: float = Field(description="Time waiting for the engine (shared with concurrent requests).")
    trie_seconds: float = Field(description="Time in trie work outside the engine: building requests, reading "
                                            "their log-probs, beam selection.")


class RecommendationResponse(BaseModel):
    object: Literal["recommendation"] = "recommendation"
    model: str
    items: list[RecommendedItem] = Field(description="k distinct catalogue items, best first.")
    history_used: int = Field(description="History items shown to the model (the most recent ones).")
    excluded: int = Field(description="Catalogue items excluded from the ranking (hidden items included).")
    catalogue_version: int = Field(description="Catalogue version the items come from (0: as trained; "
                                               "POST /v1/admin/catalogue/reload serves a newer one).")
    decode: DecodeInfo


class CatalogueInfo(BaseModel):
    object: Literal["catalogue"] = "catalogue"
    version: int = Field(description="Catalogue version this server now serves (0: as trained).")
    items: int = Field(description="Catalogue rows (hidden ones included).")
    hidden: int = Field(description="Hidden items (never recommended nor completed).")
    reloaded: bool = Field(description="Whether this call changed the served version.")
    seconds: float = Field(description="Time the reload took.")


# --------------------------------------------------------------------------- service
@dataclass(frozen=True)
class Served:
    """Everything a request reads about the catalogue, swapped as one reference on reload (never mutated):
    the bundle at one catalogue version (trie, item ids, titles, lookups, hidden rows) and its explainer."""

    bundle: Any
    explainer: Any


def _load_current(bundle):
    """``bundle`` at its current catalogue version, with the lookups and prompt renderer a request needs
    already built (here, off the event loop, rather than by the first request after the swap)."""
    new = bundle.with_catalogue()
    _ = new.renderer, new.lookup([new.item_ids[0]])
    return new


class RecommendationService:
    """Turns requests into constrained beam searches on the shared engine."""

    def __init__(self, bundle, engine, model_name: str, lora_request=None, max_k: int = DEFAULT_MAX_K,
                 max_concurrency: int = 64):
        self.model_name, self.max_k = model_name, max_k
        self.engine, self.lora_request = engine, lora_request
        self.topk = AsyncTopK(engine, bundle.trie, bundle.item_ids, lora_request, max_concurrency=max_concurrency)
        self.topk.check(max_k, MAX_BEAMS)
        self.served = Served(bundle, make_explainer(bundle, engine, lora_request))
        self._reload_lock = asyncio.Lock()

    @property
    def bundle(self):
        return self.served.bundle

    async def reload(self) -> CatalogueInfo:
        """Serve the bundle's current catalogue version (``generative_rec.catalogue``) from now on.

        The new version is loaded off the event loop, checked against the engine, and swapped in as one
        reference: a request in flight keeps the version it started with (its engine requests name it, and
        rows are stable across versions). A version the engine cannot serve raises ConfigError and the old
        one stays."""
        from generative_rec.catalogue import current_version
        from generative_rec.decoding.vllm_processor import refresh_newest

        async with self._reload_lock:
            t0 = time.perf_counter()
            old = self.served.bundle
            changed = current_version(old.path) != old.catalogue_version
            if changed:
                new = await asyncio.get_running_loop().run_in_executor(None, _load_current, old)
                self.topk.check(self.max_k, MAX_BEAMS, new.trie)
                self.served = Served(new, make_explainer(new, self.engine, self.lora_request))
                refresh_newest()  # completions without a version see it from now on, not up to 1 s later
                log.info("genrec: catalogue version %d -> %d (%d items, %d hidden) in %.3f s", old.catalogue_version,
                         new.catalogue_version, new.num_items, len(new.hidden), time.perf_counter() - t0)
            return self.catalogue_info(changed, time.perf_counter() - t0)

    def catalogue_info(self, reloaded: bool = False, seconds: float = 0.0) -> CatalogueInfo:
        b = self.served.bundle
        return CatalogueInfo(version=b.catalogue_version, items=b.num_items, hidden=len(b.hidden), reloaded=reloaded,
                             seconds=round(seconds, 5))

    async def watch(self, every_s: float) -> None:
        """Reload whenever the catalogue's current version changes (checked every ``every_s`` seconds)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.reload()
            except Exception:  # a bad version must not stop the watch; the old one keeps being served
                log.exception("genrec: catalogue reload failed; still serving version %d",
                              self.served.bundle.catalogue_version)

    async def recommend(self, req: RecommendationRequest) -> RecommendationResponse:
        from vllm.exceptions import VLLMValidationError

        served = self.served  # one version for the whole request
        bundle = served.bundle
        try:
            p = prepare(bundle, req.history, req.k, req.exclude_history, req.exclude, self.max_k)
            if req.num_beams is not None and not req.k <= req.num_beams <= MAX_BEAMS:
                raise RequestError(f"num_beams must be between k={req.k} and {MAX_BEAMS} (got {req.num_beams})",
                                   "num_beams")
            if req.explain and served.explainer is None:
                raise RequestError("explanations are not available in this bundle (it was not trained with an "
                                   "`explain` template)", "explain")
        except RequestError as e:
            raise VLLMValidationError(str(e), parameter=e.param) from None
        stats = SearchStats()
        t0 = time.perf_counter()
        (ranked,) = await self.topk.topk([p.prompt], p.k, req.num_beams, [p.exclude], stats=stats, catalogue=bundle)
        items = items_of(bundle, ranked)
        if req.explain:
            texts = await served.explainer.explain(p.history, ranked.items)
            for it, text in zip(items, texts, strict=True):
                it["explanation"] = text
        return RecommendationResponse(
            model=self.model_name, items=[RecommendedItem(**it) for it in items], history_used=p.used,
            excluded=len(p.exclude), catalogue_version=bundle.catalogue_version,
            decode=self._decode_info(stats, time.perf_counter() - t0))

    @staticmethod
    def _decode_info(stats: SearchStats, seconds: float) -> DecodeInfo:
        engine = stats.extra.get("engine_s", 0.0)
        trie = stats.mask_seconds + max(0.0, stats.model_seconds - engine)
        return DecodeInfo(steps=stats.steps, beams_scored=stats.rows, engine_requests=stats.extra.get("requests", 0),
                          seconds=round(seconds, 5), engine_seconds=round(engine, 5), trie_seconds=round(trie, 5))

    def close(self) -> None:
        self.topk.close()


# --------------------------------------------------------------------------- route
class BodyLimitRoute(APIRoute):
    """Rejects bodies over ``MAX_BODY_BYTES`` with HTTP 400 before they are parsed."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def limited(request: Request):
            from vllm.exceptions import VLLMValidationError

            n = request.headers.get("content-length", "")
            too_big = n.isdigit() and int(n) > MAX_BODY_BYTES
            if not too_big:
                too_big = len(await request.body()) > MAX_BODY_BYTES  # cached: the handler reuses it
            if too_big:
                raise VLLMValidationError(f"request body is larger than {MAX_BODY_BYTES} bytes (a history may have "
                                          f"at most {MAX_HISTORY_ITEMS} items)")
            return await handler(request)

        return limited


router = APIRouter(route_class=BodyLimitRoute, tags=["recommendations"])


@router.post("/v1/recommendations", response_model=RecommendationResponse, response_model_exclude_none=True,
             responses={400: {"description": "Invalid request: the message says what is wrong."},
                        401: {"description": "Missing or wrong API key (server started with --api-key)."}})
async def recommendations(body: RecommendationRequest, raw_request: Request) -> RecommendationResponse:
    """Top-k catalogue items for a history, by trie-constrained beam search (sequence log-probability)."""
    return await raw_request.app.state.genrec.recommend(body)


admin = APIRouter(tags=["admin"])


@admin.post("/v1/admin/catalogue/reload", response_model=CatalogueInfo,
            responses={401: {"description": "Missing or wrong API key (server started with --api-key)."}})
async def reload_catalogue(raw_request: Request) -> CatalogueInfo:
    """Serve the bundle's current catalogue version (items added or hidden with `genrec catalogue`) from now
    on, without a restart. Requests in flight finish under the version they started with."""
    from vllm.exceptions import VLLMValidationError

    from generative_rec.errors import GenRecError

    try:
        return await raw_request.app.state.genrec.reload()
    except GenRecError as e:
        raise VLLMValidationError(f"catalogue not reloaded (still serving the previous version): {e}") from None


@admin.get("/v1/admin/catalogue", response_model=CatalogueInfo)
async def catalogue_info(raw_request: Request) -> CatalogueInfo:
    """The catalogue version this server serves."""
    return raw_request.app.state.genrec.catalogue_info()


# --------------------------------------------------------------------------- guard on vLLM's routes
GUARDED_ROUTES = ("/v1/completions", "/v1/chat/completions")


def guard_completion_body(route: APIRoute, cpu: bool) -> None:
    """HTTP 400, on one of vLLM's completion routes, for two request shapes vLLM 0.32 does not survive:

    - ``structured_outputs`` that is not a JSON object: its request models read it with ``.get`` in a
      before-validator, so a list, string or number raised ``AttributeError``, HTTP 500 (found by
      ``tests/vllm/test_serve_fuzz.py``);
    - ``seed`` on the CPU engine (``cpu``): when a seeded request's prefill is split into chunks (concurrent
      load past the per-step token budget), the model runner rewinds the request's generator with
      ``set_offset``, which a CPU ``torch.Generator`` does not support: ``RuntimeError: CPU Generator does
      not use offset`` kills the engine and every request in flight (found by
      ``tests/vllm/test_catalogue_reload.py``'s 32-client load)."""
    from fastapi.routing import request_response

    handler = route.get_route_handler()

    async def guarded(request: Request):
        import json

        from vllm.exceptions import VLLMValidationError

        try:
            body = json.loads(await request.body())  # cached: the handler reuses it
        except (ValueError, RecursionError):
            body = None  # not JSON: vLLM's own message
        value = body.get("structured_outputs") if isinstance(body, dict) else None
        if value is not None and not isinstance(value, dict):
            raise VLLMValidationError(f"structured_outputs must be an object (got {type(value).__name__})",
                                      parameter="structured_outputs")
        if cpu and isinstance(body, dict) and body.get("seed") is not None:
            raise VLLMValidationError("seed is not supported on the CPU engine: vLLM 0.32 crashes when a seeded "
                                      "request's prompt is prefilled in chunks; omit it", parameter="seed")
        return await handler(request)

    route.app = request_response(guarded)


def attach(app) -> None:
    """Add the recommendations route to vLLM's app (before its state is initialised), and guard vLLM's
    completion routes against a request shape its validation does not catch."""
    from generative_rec.decoding.vllm_engine import is_cpu_build

    app.include_router(router)
    app.include_router(admin)
    cpu = is_cpu_build()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path in GUARDED_ROUTES:
            guard_completion_body(route, cpu)
