"""The trie as a vLLM logits processor: constrained ``/v1/completions`` (and ``LLM.generate``) output.

A thin adapter between :class:`generative_rec.trie.Trie` and vLLM's batch-level logits-processor interface
(``vllm.v1.sample.logits_processor.LogitsProcessor``, the V1 model runner's). It is registered once per
engine (``LLM(..., logits_processors=[FQCN])`` or ``--logits-processors FQCN``) and is inert for every
request that does not ask for it. A request opts in through ``SamplingParams.extra_args`` — sent over HTTP
as ``"vllm_xargs"`` in the completion body:

``genrec_constrained``  (1 / true)  constrain the generated tokens to walk the trie from the root: the
                        completion is exactly one catalogue item ID, then EOS (forced once the ID is
                        complete, so the completion stops there). Greedy and sampled completions alike.
``genrec_exclude``      (list of catalogue item ids, optional) items the completion must not produce.

The prompt must end where an item ID begins (for the bundle's inference template: ``Bundle.prompt_ids``);
``max_tokens`` must leave room for the longest ID plus EOS (``trie.max_depth + 1``); ``min_tokens`` and
``ignore_eos`` are refused.
Masking keeps the model's logits for allowed tokens and sets every other token to ``-inf``; the scores
of the constrained beam search do not come from here (see ``decoding.vllm_engine``).

The processor finds the bundle through the ``GENREC_BUNDLE`` environment variable (the launcher sets it),
or else as the parent of the served model folder (a bundle's ``model/``).

GPU note: vLLM's default GPU model runner (MRV2) has a different processor interface; launch with
``VLLM_USE_V2_MODEL_RUNNER=0`` (``serving.launch`` does) so this one is used. On CPU the V1 runner is
the only one.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

if TYPE_CHECKING:
    from vllm.config import VllmConfig

KEY_CONSTRAINED = "genrec_constrained"
KEY_EXCLUDE = "genrec_exclude"
ENV_BUNDLE = "GENREC_BUNDLE"
FQCN = "generative_rec.decoding.vllm_processor:TrieLogitsProcessor"
MAX_EXCLUDE = 10_000


def bundle_path_for(model_dir: str | None = None) -> Path | None:
    """The bundle the processor serves: ``$GENREC_BUNDLE``, else the parent of a bundle's ``model/``."""
    env = os.environ.get(ENV_BUNDLE)
    if env:
        return Path(env)
    if model_dir and (Path(model_dir).parent / "bundle.json").exists():
        return Path(model_dir).parent
    return None


class TrieSpec:
    """What the processor needs from a bundle: the trie, item id -> row, and the EOS token."""

    def __init__(self, path: Path):
        from generative_rec.bundle import Bundle

        b = Bundle(path)
        self.path = path
        self.trie = b.trie
        self.rows = {iid: n for n, iid in enumerate(b.item_ids)}
        self.eos = int(b.tokenizer.eos_token_id)


@lru_cache(maxsize=4)
def load_spec(path: str) -> TrieSpec:
    return TrieSpec(Path(path))


def is_constrained(extra_args: dict | None) -> bool:
    if not extra_args:
        return False
    v = extra_args.get(KEY_CONSTRAINED)
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes")
    return bool(v)


def parse_exclude(extra_args: dict | None, spec: TrieSpec) -> list[int]:
    """Catalogue rows of ``genrec_exclude``; ValueError (-> HTTP 400) names every unknown id."""
    raw = (extra_args or {}).get(KEY_EXCLUDE)
    if raw is None:
        return []
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
    rows = sorted({spec.rows[k] for k in keys})
    if len(rows) >= spec.trie.num_items:
        raise ValueError(f"vllm_xargs.{KEY_EXCLUDE} excludes every item in the catalogue")
    return rows


class _Row:
    """Per-request state: the live output-token list (a reference), how much of it the trie has seen."""

    __slots__ = ("out", "seen", "node", "banned")

    def __init__(self, out: list[int], banned: dict[int, int] | None):
        self.out, self.seen, self.node, self.banned = out, 0, 0, banned


class TrieLogitsProcessor(LogitsProcessor):
    """Restricts opted-in requests to one catalogue item ID followed by EOS (see the module docstring)."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        model = getattr(getattr(vllm_config, "model_config", None), "model", None)
        path = bundle_path_for(model)
        self.spec = load_spec(str(path)) if path is not None else None
        self.device = device
        self.rows: dict[int, _Row] = {}

    @classmethod
    def validate_params(cls, params: SamplingParams) -> None:
        if not is_constrained(params.extra_args):
            if params.extra_args and KEY_EXCLUDE in params.extra_args:
                raise ValueError(f"vllm_xargs.{KEY_EXCLUDE} needs vllm_xargs.{KEY_CONSTRAINED}: 1")
            return
        if params.min_tokens or params.ignore_eos:
            raise ValueError("min_tokens and ignore_eos cannot be combined with vllm_xargs.genrec_constrained "
                             "(the completion ends with EOS right after the item ID)")
        path = bundle_path_for(None)
        if path is None:
            raise ValueError("constrained decoding needs the server to be started by `genrec serve` "
                             f"(no bundle: set {ENV_BUNDLE})")
        parse_exclude(params.extra_args, load_spec(str(path)))

    def is_argmax_invariant(self) -> bool:
        return False

    def _new_row(self, params: SamplingParams, _prompt: list[int] | None, out: list[int]) -> _Row | None:
        if not is_constrained(params.extra_args):
            return None
        if self.spec is None:
            raise ValueError(f"constrained decoding requested but no bundle was found (set {ENV_BUNDLE})")
        rows = parse_exclude(params.extra_args, self.spec)
        return _Row(out, self.spec.trie.exclusion(rows) if rows else None)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_row)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        trie, eos = self.spec.trie, self.spec.eos
        touched: list[int] = []
        keep_cols: list[np.ndarray] = []
        for idx, r in self.rows.items():
            while r.seen < len(r.out) and r.node >= 0:  # advance by the tokens generated since last step
                r.node = trie.child(r.node, int(r.out[r.seen]))  # -1 past a leaf (EOS) or off the trie
                r.seen += 1
            cols = trie.allowed_excluding(r.node, r.banned) if r.node >= 0 else ()
            if len(cols) == 0:  # a complete ID (or nothing left): only EOS, so the completion stops
                cols = (eos,)
            touched.append(idx)
            keep_cols.append(np.asarray(cols, dtype=np.int64))
        dev = logits.device
        rows = torch.from_numpy(np.repeat(np.asarray(touched, dtype=np.int64), [len(c) for c in keep_cols])).to(dev)
        cols = torch.from_numpy(np.concatenate(keep_cols)).to(dev)
        keep = logits[rows, cols]  # the allowed tokens' logits, kept as they are
        logits.index_fill_(0, torch.as_tensor(touched, dtype=torch.long, device=dev), float("-inf"))
        logits[rows, cols] = keep
        return logits


def constrained_args(exclude: list[str] | None = None) -> dict[str, Any]:
    """``extra_args`` / ``vllm_xargs`` for a constrained completion (helper for Python callers)."""
    out: dict[str, Any] = {KEY_CONSTRAINED: 1}
    if exclude:
        out[KEY_EXCLUDE] = list(exclude)
    return out
