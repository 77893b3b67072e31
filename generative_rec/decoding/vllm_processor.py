"""The trie as a vLLM logits processor: constrained completions, and top-W scoring inside the engine.

A thin adapter between :class:`generative_rec.trie.Trie` and vLLM's batch-level logits-processor interface
(``vllm.v1.sample.logits_processor.LogitsProcessor``, the V1 model runner's). It is registered once per
engine (``LLM(..., logits_processors=[FQCN])`` or ``--logits-processors FQCN``) and is inert for every
request that does not ask for it. A request opts in through ``SamplingParams.extra_args`` — sent over HTTP
as ``"vllm_xargs"`` in the completion body — in one of two modes.

**Constrained completion** (``genrec_constrained``: 1 / true): the generated tokens walk the trie from the
root; the completion is exactly one catalogue item ID, then EOS (forced once the ID is complete, so the
completion stops there). Greedy and sampled completions alike. Masking keeps the model's logits for allowed
tokens and sets every other token to ``-inf``. ``min_tokens`` and ``ignore_eos`` are refused.

**Top-W scoring** (``genrec_score``: 1 / true; what ``POST /v1/recommendations`` and ``genrec generate``
send): the row of each generated position is rewritten to the model's *full-vocabulary* log-softmax on the
trie's live children of the current node and ``-inf`` on every other token, except that the probability
mass of the masked tokens is spread evenly over *sink* tokens (tokens no ID uses). The row then already sums
to 1, so the engine's ``processed_logprobs`` (``--logprobs-mode processed_logprobs``, which ``genrec serve``
and ``open_llm`` set) returns these values unchanged: with ``logprobs=W+1`` the engine hands back the W best
allowed children with exactly the log-probabilities HF beam search adds up (masking, not renormalising),
whatever the fan-out — one engine request instead of ``ceil(children / 128)`` ``logprob_token_ids``
requests. The mass is spread over as many sinks as it takes for each share to stay below the W-th best
allowed child, so the W best entries of the row are allowed children and greedy decoding follows the best
one: a request with ``max_tokens > 1`` also scores the next positions along that path. (When even every free
token would not be enough — a model that puts almost no mass on the allowed children — one sink takes the
whole rest: the W best allowed children still come back, the path may leave the trie.) Once the ID is
complete, or the path left the trie, EOS is forced and the request stops.

  ``genrec_prefix``  (list of token ids, default ``[]``) the ID tokens already chosen; the prompt ends with them
  Scoring requests must be greedy (``temperature=0``) without penalties, ``logit_bias``, ``bad_words``,
  ``allowed_token_ids``, ``min_tokens`` or ``ignore_eos`` (each would change the row after this processor).

Both modes: ``genrec_exclude`` (list of catalogue item ids, optional) items that must not be produced.
``genrec_catalogue_version`` (int, optional) the catalogue version (``generative_rec.catalogue``) whose trie
the request walks; ``POST /v1/recommendations`` sends the version it serves, so the engine agrees with it
even while a reload swaps versions. Without it, validation (in the API process) takes the newest version —
its pointer file is checked at most once per second, so a new version is seen within about a second — and
pins it into the request's ``extra_args`` for the engine. Each version's hidden items are always excluded.
Versions are loaded on first use and cached (:func:`load_spec`); catalogue rows are stable across versions.
Structured outputs (``structured_outputs``, a JSON ``response_format``) are refused in both modes.
The prompt must end where an item ID begins (for the bundle's inference template: ``Bundle.prompt_ids``).

The processor finds the bundle through the ``GENREC_BUNDLE`` environment variable (the launcher sets it),
or else as the parent of the served model folder (a bundle's ``model/``).

GPU note: vLLM's default GPU model runner (MRV2) has a different processor interface; launch with
``VLLM_USE_V2_MODEL_RUNNER=0`` (``serving.launch`` does) so this one is used. On CPU the V1 runner is
the only one.
"""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from generative_rec.decoding.topk import Exclusion

if TYPE_CHECKING:
    from vllm.config import VllmConfig

KEY_CONSTRAINED = "genrec_constrained"
KEY_EXCLUDE = "genrec_exclude"
KEY_SCORE = "genrec_score"
KEY_PREFIX = "genrec_prefix"
KEY_VERSION = "genrec_catalogue_version"
KEY_PINNED = "genrec_catalogue_pinned"  # set by validation: the version was the newest, not the caller's
LOGPROBS_MODE = "processed_logprobs"  # the engine-wide mode scoring requests need
ENV_BUNDLE = "GENREC_BUNDLE"
FQCN = "generative_rec.decoding.vllm_processor:TrieLogitsProcessor"
MAX_EXCLUDE = 10_000
MAX_PREFIX = 64
LOGPROBS_EXTRA = 1  # a scoring request asks for logprobs = W + 1 (the sampled token may be a sink)

log = logging.getLogger(__name__)


def bundle_path_for(model_dir: str | None = None) -> Path | None:
    """The bundle the processor serves: ``$GENREC_BUNDLE``, else the parent of a bundle's ``model/``."""
    env = os.environ.get(ENV_BUNDLE)
    if env:
        return Path(env)
    if model_dir and (Path(model_dir).parent / "bundle.json").exists():
        return Path(model_dir).parent
    return None


class TrieSpec:
    """What the processor needs from one catalogue version of a bundle: the trie, item id -> row, the hidden
    rows (excluded from every request) and the EOS token."""

    def __init__(self, trie, item_ids: list[str], eos: int, hidden: frozenset[int] = frozenset(), version: int = 0):
        self.trie, self.eos, self.hidden, self.version = trie, eos, hidden, version
        self.rows = {iid: n for n, iid in enumerate(item_ids)}
        self._sinks: np.ndarray | None = None

    @classmethod
    def load(cls, path: Path, version: int) -> TrieSpec:
        from generative_rec.catalogue import load_catalogue

        cat = load_catalogue(path, version)
        return cls(cat.trie, cat.item_ids, eos_of(str(path)), cat.hidden, cat.version)

    def sinks(self, vocab: int) -> np.ndarray:
        """Every column no ID of this version uses and that is not EOS: they share the mass of the masked
        tokens in a scoring row."""
        if self._sinks is None:
            used = np.zeros(vocab, dtype=bool)
            toks = self.trie.token[1:]
            used[toks[toks < vocab]] = True
            if 0 <= self.eos < vocab:
                used[self.eos] = True
            free = np.flatnonzero(~used)
            if len(free) == 0:
                raise RuntimeError("the item IDs use every token of the vocabulary: no sink token for top-W scoring")
            self._sinks = free.astype(np.int64)
        return self._sinks


@lru_cache(maxsize=4)
def eos_of(path: str) -> int:
    from transformers import AutoTokenizer

    return int(AutoTokenizer.from_pretrained(Path(path) / "model").eos_token_id)


@lru_cache(maxsize=8)
def load_spec(path: str, version: int) -> TrieSpec:
    return TrieSpec.load(Path(path), version)


_newest: dict[str, tuple[float, float, int]] = {}  # bundle -> (checked at, pointer mtime, version)
NEWEST_CHECK_S = 1.0


def newest_version(path: str, fresh: bool = False) -> int:
    """The bundle's current catalogue version, from its pointer file: stat-ed at most once per second (every
    time with ``fresh``), read only when its modification time changed."""
    from generative_rec.catalogue import current_version, pointer_path

    now = time.monotonic()
    checked, mtime, version = _newest.get(path, (-1e9, -1.0, 0))
    if now - checked < NEWEST_CHECK_S and not fresh:
        return version
    try:
        m = pointer_path(path).stat().st_mtime_ns
    except FileNotFoundError:
        m = 0
    if m != mtime:
        version = current_version(path)
    _newest[path] = (now, m, version)
    return version


def refresh_newest() -> None:
    """Forget the checked versions: the next :func:`newest_version` reads the pointer file again."""
    _newest.clear()


def spec_for(extra_args: dict | None, path: Path) -> TrieSpec:
    """The catalogue version a request names (``genrec_catalogue_version``), else the newest one."""
    raw = (extra_args or {}).get(KEY_VERSION)
    newest = newest_version(str(path))
    if raw is None:
        return load_spec(str(path), newest)
    if isinstance(raw, int) and raw > newest:  # made current less than a second ago
        newest = newest_version(str(path), fresh=True)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= newest:
        raise ValueError(f"vllm_xargs.{KEY_VERSION} must be a catalogue version between 0 and {newest} (got {raw!r})")
    return load_spec(str(path), raw)


def _flag(extra_args: dict | None, key: str) -> bool:
    if not extra_args:
        return False
    v = extra_args.get(key)
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes")
    return bool(v)


def is_constrained(extra_args: dict | None) -> bool:
    return _flag(extra_args, KEY_CONSTRAINED)


def is_scoring(extra_args: dict | None) -> bool:
    return _flag(extra_args, KEY_SCORE)


def parse_exclude(extra_args: dict | None, spec: TrieSpec) -> list[int]:
    """Catalogue rows of ``genrec_exclude`` and the version's hidden rows; ValueError (-> HTTP 400) names
    every unknown id."""
    raw = (extra_args or {}).get(KEY_EXCLUDE)
    if raw is None:
        raw = []
    if isinstance(raw, (str, int, float)):
        raw = [raw]
    if not isinstance(raw, list):
        raise ValueError(f"vllm_xargs.{KEY_EXCLUDE} must be a list of item ids")
    if len(raw) > MAX_EXCLUDE:
        raise ValueError(f"vllm_xargs.{KEY_EXCLUDE} has {len(raw)} items; at most {MAX_EXCLUDE}")
    keys = [str(int(x)) if isinstance(x, float) and x.is_integer() else str(x) for x in raw]
    unknown = [k for k in keys if k not in spec.rows]
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5]) + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise ValueError(f"vllm_xargs.{KEY_EXCLUDE}: unknown item(s): {shown}")
    rows = sorted({spec.rows[k] for k in keys} | spec.hidden)
    if len(rows) >= spec.trie.num_items:
        raise ValueError(f"vllm_xargs.{KEY_EXCLUDE} excludes every item in the catalogue that is not hidden")
    return rows


def parse_prefix(extra_args: dict | None, spec: TrieSpec) -> tuple[list[int], int]:
    """``genrec_prefix`` and the trie node it leads to; ValueError unless it is the start of an ID."""
    raw = (extra_args or {}).get(KEY_PREFIX, [])
    if not isinstance(raw, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        raise ValueError(f"vllm_xargs.{KEY_PREFIX} must be a list of token ids")
    if len(raw) > MAX_PREFIX:
        raise ValueError(f"vllm_xargs.{KEY_PREFIX} has {len(raw)} tokens; at most {MAX_PREFIX}")
    node = spec.trie.walk(raw)
    if node < 0 or spec.trie.is_leaf(node):
        raise ValueError(f"vllm_xargs.{KEY_PREFIX} {raw} is not the start of an unfinished item ID")
    return list(raw), node


def check_scoring_params(params: SamplingParams) -> None:
    """A scoring request's row must reach the sampler as this processor leaves it."""
    bad = []
    if params.temperature >= 1e-5:
        bad.append("temperature must be 0")
    if params.presence_penalty or params.frequency_penalty or params.repetition_penalty != 1.0:
        bad.append("no presence/frequency/repetition penalty")
    if params.logit_bias or params.allowed_token_ids or params.bad_words:
        bad.append("no logit_bias, allowed_token_ids or bad_words")
    if params.min_tokens or params.ignore_eos:
        bad.append("no min_tokens or ignore_eos")
    if bad:
        raise ValueError(f"vllm_xargs.{KEY_SCORE}: " + "; ".join(bad))


class _Row:
    """Per-request state: the live output-token list (a reference), how much of it the trie has seen.

    ``score``: top-W scoring (write full-vocabulary log-probs) rather than constrained sampling (mask)."""

    __slots__ = ("out", "seen", "node", "excl", "score", "width", "spec")

    def __init__(self, out: list[int], excl: Exclusion, node: int = 0, score: bool = False, width: int = 1,
                 spec: TrieSpec | None = None):
        self.out, self.seen, self.node, self.excl, self.score, self.width = out, 0, node, excl, score, width
        self.spec = spec  # the catalogue version the request runs under

    def live(self, trie) -> np.ndarray:
        """Tokens allowed at the next position (empty once the ID is complete or the path left the trie)."""
        while self.seen < len(self.out) and self.node >= 0:  # advance by the tokens generated since last step
            self.node = trie.child(self.node, int(self.out[self.seen]))  # -1 past a leaf (EOS) or off the trie
            self.seen += 1
        if self.node < 0:
            return trie.token[:0]
        return self.excl.live_children(trie, self.node)[0]


class TrieLogitsProcessor(LogitsProcessor):
    """Constrained completions and top-W scoring rows (see the module docstring)."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        model_config = getattr(vllm_config, "model_config", None)
        self.path = bundle_path_for(getattr(model_config, "model", None))
        self.logprobs_mode = getattr(model_config, "logprobs_mode", None)
        if self.path is not None and self.logprobs_mode != LOGPROBS_MODE:
            log.warning("genrec: the engine runs with logprobs_mode=%s; %s requests need %s (their log-probs "
                        "would be renormalised)", self.logprobs_mode, KEY_SCORE, LOGPROBS_MODE)
        if self.path is not None:
            spec_for(None, self.path)  # load the newest version now: a broken bundle fails at engine start
        self.device = device
        self.rows: dict[int, _Row] = {}
        self._exclusions: dict[tuple[int, tuple[int, ...]], Exclusion] = {}

    @classmethod
    def validate_params(cls, params: SamplingParams) -> None:
        constrained, scoring = is_constrained(params.extra_args), is_scoring(params.extra_args)
        if not (constrained or scoring):
            for key in (KEY_EXCLUDE, KEY_PREFIX, KEY_VERSION):
                if params.extra_args and key in params.extra_args:
                    raise ValueError(f"vllm_xargs.{key} needs vllm_xargs.{KEY_CONSTRAINED}: 1 or {KEY_SCORE}: 1")
            return
        if constrained and scoring:
            raise ValueError(f"vllm_xargs: {KEY_CONSTRAINED} and {KEY_SCORE} cannot be combined")
        if params.structured_outputs is not None:  # its grammar mask and the trie's leave no token (HTTP 500)
            raise ValueError("structured outputs (structured_outputs, response_format) cannot be combined with "
                             f"vllm_xargs.{KEY_CONSTRAINED} or {KEY_SCORE}: the trie already constrains the output")
        if constrained and (params.min_tokens or params.ignore_eos):
            raise ValueError("min_tokens and ignore_eos cannot be combined with vllm_xargs.genrec_constrained "
                             "(the completion ends with EOS right after the item ID)")
        if constrained and params.extra_args and KEY_PREFIX in params.extra_args:
            raise ValueError(f"vllm_xargs.{KEY_PREFIX} needs vllm_xargs.{KEY_SCORE}: 1")
        if scoring:
            check_scoring_params(params)
        path = bundle_path_for(None)
        if path is None:
            raise ValueError("constrained decoding needs the server to be started by `genrec serve` "
                             f"(no bundle: set {ENV_BUNDLE})")
        extra = dict(params.extra_args)
        if extra.pop(KEY_PINNED, None):  # pinned by an earlier validation of the same params: resolve again
            extra.pop(KEY_VERSION, None)
        spec = spec_for(extra, path)
        parse_exclude(extra, spec)
        if scoring:
            parse_prefix(extra, spec)
        if KEY_VERSION not in extra:  # the engine must use the version validated here (it may not see it yet)
            params.extra_args = {**extra, KEY_VERSION: spec.version, KEY_PINNED: 1}

    def is_argmax_invariant(self) -> bool:
        return False

    def spec_for_request(self, extra_args: dict | None) -> TrieSpec:
        """The catalogue version a request runs under (:func:`spec_for`)."""
        if self.path is None:
            raise ValueError(f"constrained decoding requested but no bundle was found (set {ENV_BUNDLE})")
        return spec_for(extra_args, self.path)

    def _exclusion(self, spec: TrieSpec, rows: list[int]) -> Exclusion:
        key = (spec.version, tuple(rows))
        ex = self._exclusions.get(key)
        if ex is None:
            if len(self._exclusions) > 4096:
                self._exclusions.clear()
            ex = self._exclusions[key] = Exclusion.from_items(spec.trie, rows)
        return ex

    def _new_row(self, params: SamplingParams, _prompt: list[int] | None, out: list[int]) -> _Row | None:
        scoring = is_scoring(params.extra_args)
        if not (scoring or is_constrained(params.extra_args)):
            return None
        spec = self.spec_for_request(params.extra_args)
        excl = self._exclusion(spec, parse_exclude(params.extra_args, spec))
        node = parse_prefix(params.extra_args, spec)[1] if scoring else 0
        width = max(1, (params.logprobs or 0) - LOGPROBS_EXTRA)  # the W best children the request reads
        return _Row(out, excl, node, scoring, width, spec)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_row)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        keep_rows: list[int] = []
        keep_cols: list[np.ndarray] = []
        scoring: dict[int, tuple[TrieSpec, list[int], list[np.ndarray], list[int]]] = {}  # by catalogue version
        eos_rows: list[int] = []
        eos = -1
        for idx, r in self.rows.items():
            cols = r.live(r.spec.trie)
            if len(cols) == 0:  # a complete ID (or nothing left): only EOS, so the completion stops
                eos_rows.append(idx)
                eos = r.spec.eos
            elif r.score:
                _, rows, cs, ws = scoring.setdefault(r.spec.version, (r.spec, [], [], []))
                rows.append(idx)
                cs.append(np.asarray(cols, dtype=np.int64))
                ws.append(r.width)
            else:
                keep_rows.append(idx)
                keep_cols.append(np.asarray(cols, dtype=np.int64))
        dev = logits.device
        if keep_rows:
            rows = torch.from_numpy(np.repeat(np.asarray(keep_rows, dtype=np.int64), [len(c) for c in keep_cols])).to(dev)
            cols = torch.from_numpy(np.concatenate(keep_cols)).to(dev)
            keep = logits[rows, cols]  # the allowed tokens' logits, kept as they are
            logits.index_fill_(0, torch.as_tensor(keep_rows, dtype=torch.long, device=dev), float("-inf"))
            logits[rows, cols] = keep
        for spec, rows_, cols_, widths in scoring.values():
            self._write_scores(logits, rows_, cols_, widths, spec.sinks(logits.shape[1]))
        if eos_rows:
            idx = torch.as_tensor(eos_rows, dtype=torch.long, device=dev)
            logits.index_fill_(0, idx, float("-inf"))
            logits[idx, eos] = 0.0
        return logits

    def _write_scores(self, logits: torch.Tensor, rows: list[int], cols: list[np.ndarray], widths: list[int],
                      sinks_np: np.ndarray) -> None:
        """Rows := full-vocabulary log-softmax on the allowed columns, the rest of the mass spread on sinks."""
        dev = logits.device
        idx = torch.as_tensor(rows, dtype=torch.long, device=dev)
        lp = torch.log_softmax(logits.index_select(0, idx).float(), dim=-1)
        rr = torch.from_numpy(np.repeat(np.arange(len(rows), dtype=np.int64), [len(c) for c in cols])).to(dev)
        cc = torch.from_numpy(np.concatenate(cols)).to(dev)
        allowed = torch.zeros(lp.shape, dtype=torch.bool, device=dev)
        allowed[rr, cc] = True
        rest = lp.masked_fill(allowed, float("-inf")).logsumexp(dim=-1)  # log(1 - P(allowed)), stably
        lp.masked_fill_(~allowed, float("-inf"))
        # the W-th best allowed log-prob of each row (its worst allowed one when it has fewer than W children)
        w = torch.as_tensor([min(wd, len(c)) for wd, c in zip(widths, cols, strict=True)], device=dev)
        top = torch.topk(lp, int(w.max()), dim=-1).values
        kth = top.gather(1, (w - 1)[:, None])[:, 0]
        # m sinks of (1 - P) / m each, m = floor((1 - P) / p_W) + 1, so every share is below p_W
        sinks = torch.from_numpy(sinks_np).to(dev)
        m = torch.floor(torch.exp(torch.clamp(rest - kth, max=40.0))) + 1
        m = torch.where(m > len(sinks), torch.ones_like(m), m)  # not enough free tokens: one sink takes it all
        share = rest - torch.log(m)
        j = torch.arange(len(sinks), device=dev, dtype=m.dtype)
        lp[:, sinks] = torch.where(j[None, :] < m[:, None], share[:, None], torch.full_like(share[:, None], float("-inf")))
        logits.index_copy_(0, idx, lp.to(logits.dtype))


def constrained_args(exclude: list[str] | None = None) -> dict[str, Any]:
    """``extra_args`` / ``vllm_xargs`` for a constrained completion (helper for Python callers)."""
    out: dict[str, Any] = {KEY_CONSTRAINED: 1}
    if exclude:
        out[KEY_EXCLUDE] = list(exclude)
    return out


def scoring_args(prefix: list[int] | tuple[int, ...] = (), exclude: list[str] | None = None,
                 version: int | None = None) -> dict[str, Any]:
    """``extra_args`` / ``vllm_xargs`` of a top-W scoring request after the ID tokens ``prefix`` (under
    catalogue version ``version``; None: the newest)."""
    out: dict[str, Any] = {KEY_SCORE: 1}
    if version is not None:
        out[KEY_VERSION] = int(version)
    if prefix:
        out[KEY_PREFIX] = [int(t) for t in prefix]
    if exclude:
        out[KEY_EXCLUDE] = list(exclude)
    return out
