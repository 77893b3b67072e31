"""Semantic IDs: residual k-means codes of item-text embeddings (TIGER-style, with k-means instead of RQ-VAE).

Items with similar text share ID prefixes, and a new item can be coded from its text alone. Steps:

1. **embeddings** — one vector per item text (``RecData.texts``), from ``options`` (:class:`SemanticOptions`):
   ``embeddings``: an ``.npy`` path (or, calling :func:`build_from_embeddings`, an array or a
   ``texts -> array`` callable), else ``encoder``: ``minilm`` (default: the sentence encoder) or ``llm``
   (mean-pooled hidden states of the causal LM at ``model_path``, default the converted SmolLM2), cached
   on disk. MiniLM is the default because its codes group related items far better on MovieLens (genre
   agreement of items sharing a first code: 0.51 vs 0.26 for SmolLM2's last layer; random pairs 0.18)
   and it embeds the catalogue in ~11 s instead of ~90 s on one CPU core;
2. **normalise** — centre, scale each dimension to unit variance (LLM hidden states have a few huge
   "outlier" dimensions that would otherwise decide every distance), project on the top ``pca_dim``
   principal components;
3. **residual quantisation** — ``levels`` rounds of k-means with ``codebook_size`` centroids, each on the
   residual of the previous round: level-1 codes are coarse topics, later levels refine;
4. **collision-free last level** (``unique_last_level``, default on) — within each group of items sharing
   the first ``levels - 1`` codes, the last code is chosen by a minimum-cost one-to-one assignment of items
   to last-level centroids (Hungarian, on squared distances), so items share a full code only where a
   group has more than ``codebook_size`` items (LC-Rec's uniform mapping reaches the same by Sinkhorn);
5. **disambiguation** — items whose codes still coincide get one more token ``<d_0>``, ``<d_1>``, ... (in
   catalogue order). Only such items get it: an ID without it is never a prefix of another, since its
   codes are shared by no other item.

Tokens: ``<a_12><b_3><c_200>`` (+ ``<d_1>``): one new token per (level, code). ``token_items`` lists, for each
code token, the items carrying it (their titles initialise its embedding); ``d`` tokens get the mean.
``meta`` records the settings, every item's codes, the per-level quantisation error and a hash of the
embeddings. The normaliser and centroids travel with the index as ``ItemIndex.arrays`` (a bundle saves them
as ``index.npz``; ``codebooks_path`` also writes them to a file of one's choice), so a new item can be coded
with :func:`encode`, or given a free ID with :func:`extend` (``genrec index --add-items``). Uses no
interaction data at all.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generative_rec.indexing.base import IndexConfig, ItemIndex, register, scheme_options
from generative_rec.indexing.kmeans import kmeans, sq_dists

Embeddings = np.ndarray | str | Path | Callable[[list[str]], np.ndarray]


@dataclass
class SemanticOptions:
    embeddings: str | None = field(default=None, metadata={
        "help": ".npy file of item embeddings [num_items, dim] (then encoder is not used)"})
    encoder: str = field(default="minilm", metadata={
        "help": "minilm (sentence encoder) | llm (mean-pooled hidden states of the causal LM at model_path)"})
    model_path: str | None = field(default=None, metadata={
        "help": "the causal LM of encoder llm (null: the converted SmolLM2)"})
    levels: int = field(default=3, metadata={"help": "k-means levels (codes per ID before disambiguation), 1..25"})
    codebook_size: int | None = field(default=None, metadata={
        "help": "centroids per level; null: about twice the levels-th root of the catalogue size, "
                "a power of two in [8, 256]"})
    pca_dim: int | None = field(default=64, metadata={
        "help": "principal components kept after normalising (null: all)"})
    iters: int = field(default=50, metadata={"help": "k-means iterations per level"})
    unique_last_level: bool = field(default=True, metadata={
        "help": "choose the last code by a one-to-one assignment within each group (fewer shared codes)"})
    codebooks_path: str | None = field(default=None, metadata={
        "help": "also save the normaliser and centroids here (.npz) to code new items with encode()"})


def default_codebook_size(n: int, levels: int) -> int:
    """About twice the ``levels``-th root of the catalogue size, as a power of two in [8, 256]."""
    target = 2.0 * n ** (1.0 / levels)
    return int(min(256, max(8, 2 ** int(np.ceil(np.log2(target))))))


def normaliser(x: np.ndarray, pca_dim: int | None) -> dict[str, np.ndarray]:
    """Mean, per-dimension scale and PCA projection fitted on ``x`` (rows = items)."""
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    z = (x - mean) / scale
    dim = min(pca_dim or x.shape[1], x.shape[1], len(x))
    # principal axes from the d x d scatter matrix (much cheaper than an SVD of the n x d data)
    _, vecs = np.linalg.eigh(z.T @ z)
    proj = vecs[:, ::-1][:, :dim]
    # fix each axis's sign (arbitrary in eigh) so saved codebooks do not depend on the LAPACK build
    signs = np.sign(proj[np.abs(proj).argmax(0), np.arange(dim)])
    return {"mean": mean, "scale": scale, "proj": proj * np.where(signs == 0, 1.0, signs)}


def normalise(x: np.ndarray, norm: dict[str, np.ndarray]) -> np.ndarray:
    return ((x - norm["mean"]) / norm["scale"]) @ norm["proj"]


def residual_kmeans(z: np.ndarray, levels: int, k: int, rng: np.random.Generator, iters: int = 50,
                    unique_last: bool = True) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """Codes ``[n, levels]``, centroids per level and relative residual energy after each level.
    With ``unique_last`` the last level is assigned by :func:`unique_last_codes`."""
    resid = z.copy()
    total = float((z * z).sum()) or 1.0
    codes = np.zeros((len(z), levels), dtype=np.int64)
    books, errors = [], []
    for lvl in range(levels):
        c, labels = kmeans(resid, k, rng, iters=iters)
        codes[:, lvl] = labels
        if unique_last and lvl == levels - 1:
            codes[:, : lvl + 1] = unique_last_codes(codes[:, : lvl + 1], resid, c)
            labels = codes[:, lvl]
        resid = resid - c[labels]
        books.append(c)
        errors.append(round(float((resid * resid).sum()) / total, 4))
    return codes, books, errors


def unique_last_codes(codes: np.ndarray, resid: np.ndarray, last_book: np.ndarray) -> np.ndarray:
    """Reassign the last column of ``codes`` so items sharing the other codes get distinct last codes
    where the group fits the codebook. ``resid``: the residuals the last level quantised."""
    from scipy.optimize import linear_sum_assignment

    codes = codes.copy()
    k = len(last_book)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(codes[:, :-1]):
        groups.setdefault(tuple(int(c) for c in row), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        cost = sq_dists(resid[members], last_book)
        if len(members) <= k:
            rows, cols = linear_sum_assignment(cost)
            codes[np.asarray(members)[rows], -1] = cols
        else:  # more items than codes: keep each item's nearest code
            codes[members, -1] = cost.argmin(1)
    return codes


def encode(x: np.ndarray, codebooks: dict[str, np.ndarray]) -> np.ndarray:
    """Level codes (without disambiguation) of new embeddings ``x`` with saved ``codebooks`` (see module)."""
    resid = normalise(np.asarray(x, dtype=np.float64), codebooks)
    levels = int(codebooks["levels"])
    codes = np.zeros((len(resid), levels), dtype=np.int64)
    for lvl in range(levels):
        c = codebooks[f"level{lvl}"]
        codes[:, lvl] = sq_dists(resid, c).argmin(1)
        resid = resid - c[codes[:, lvl]]
    return codes


def load_embeddings(data, options: SemanticOptions) -> tuple[np.ndarray, str]:
    """The item embeddings ``options`` ask for, and a short description of where they came from."""
    if options.embeddings:
        return np.load(options.embeddings), f"file:{options.embeddings}"
    from generative_rec.embeddings import embed_texts

    encoder = options.encoder
    return embed_texts(list(data.texts), encoder=encoder, model_path=options.model_path), encoder


def build_from_embeddings(data, cfg: IndexConfig, emb: np.ndarray | Callable[[list[str]], np.ndarray],
                          source: str = "array") -> ItemIndex:
    """The semantic index of ``data`` from precomputed item embeddings ``emb`` ``[num_items, dim]`` (or a
    ``texts -> embeddings`` callable); ``cfg.options`` as for the scheme (``embeddings``/``encoder`` unused)."""
    o: SemanticOptions = scheme_options("semantic", cfg.options)
    if callable(emb):
        emb, source = emb(list(data.texts)), "callable"
    emb = np.asarray(emb, dtype=np.float64)
    n = data.num_items
    if emb.ndim != 2 or len(emb) != n:
        raise ValueError(f"embeddings have shape {emb.shape}, expected ({n}, dim)")
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or inf")
    levels = o.levels
    if not 1 <= levels <= 25:
        raise ValueError("levels must be in 1..25 (one letter per level plus one for disambiguation)")
    k = o.codebook_size if o.codebook_size is not None else default_codebook_size(n, levels)
    pca_dim = o.pca_dim
    rng = np.random.default_rng(cfg.seed)
    norm = normaliser(emb, pca_dim)
    codes, books, errors = residual_kmeans(normalise(emb, norm), levels, k, rng, o.iters, o.unique_last_level)

    groups: dict[tuple[int, ...], list[int]] = {}
    for i in range(n):
        groups.setdefault(tuple(codes[i]), []).append(i)
    letters = string.ascii_lowercase
    ids, token_items, full = [], {}, []
    for i in range(n):
        key = tuple(int(c) for c in codes[i])
        toks = [f"<{letters[lvl]}_{c}>" for lvl, c in enumerate(key)]
        for t in toks:
            token_items.setdefault(t, []).append(i)
        group = groups[key]
        if len(group) > 1:
            d = group.index(i)
            toks.append(f"<{letters[levels]}_{d}>")
            token_items.setdefault(toks[-1], [])
            key = (*key, d)
        ids.append("".join(toks))
        full.append(list(key))
    new_tokens = sorted(token_items, key=lambda t: (t[1], int(t[3:-1])))
    meta = {
        "levels": levels, "codebook_size": k, "pca_dim": int(norm["proj"].shape[1]),
        "embedding_source": source, "embedding_dim": int(emb.shape[1]),
        "embedding_sha256": hashlib.sha256(np.ascontiguousarray(emb, dtype=np.float32).tobytes()).hexdigest(),
        "residual_error": errors, "distinct_codes": len(groups),
        "disambiguated_items": sum(len(g) for g in groups.values() if len(g) > 1),
        "max_shared": max(len(g) for g in groups.values()), "codes": full,
    }
    codebooks = {"levels": np.asarray(levels), **norm, **{f"level{lvl}": b for lvl, b in enumerate(books)}}
    if o.codebooks_path:
        path = Path(o.codebooks_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **codebooks)
        meta["codebooks_path"] = str(path)
    return ItemIndex(scheme="semantic", item_ids=list(data.item_ids), id_texts=ids, new_tokens=new_tokens,
                     token_items={t: token_items[t] for t in new_tokens}, meta=meta, arrays=codebooks)


@register("semantic", SemanticOptions)
def build(data, cfg: IndexConfig, options: SemanticOptions) -> ItemIndex:
    emb, source = load_embeddings(data, options)
    return build_from_embeddings(data, cfg, emb, source)


# --------------------------------------------------------------------------- new items without retraining
def code_token(level: int, code: int) -> str:
    return f"<{string.ascii_lowercase[level]}_{code}>"


def extend(index: ItemIndex, emb: np.ndarray, codebooks: dict[str, np.ndarray]) -> list[list[int]]:
    """Full codes (with a disambiguation code where needed) for new items of embeddings ``emb``, using only
    tokens the index already has (``index.new_tokens``: the model's vocabulary is fixed once it is trained).

    Per item: at each level but the last, the nearest centroid whose token exists; at the last level the
    existing tokens in order of distance, taking the first that gives a free ID — a code tuple no item has
    (the ID is those codes), or one whose items already carry disambiguation codes and a ``<d_N>`` token that
    exists is still free there (the ID is the codes plus ``<d_N>``). A tuple held by exactly one item (an ID
    without ``<d_N>``) cannot be shared: a disambiguated ID would extend it. Items are coded in order, each
    seeing the ones before. Returns ``[]`` entries for items that cannot be coded (the caller says why)."""
    levels = int(index.meta["levels"])
    vocab = set(index.new_tokens)
    plain: set[tuple[int, ...]] = set()  # code tuples held by one item (ID without a d code)
    groups: dict[tuple[int, ...], set[int]] = {}  # code tuple -> d codes taken
    for c in index.meta["codes"]:
        if len(c) == levels:
            plain.add(tuple(c))
        else:
            groups.setdefault(tuple(c[:levels]), set()).add(int(c[levels]))
    d_free = sorted(int(t[3:-1]) for t in vocab if t[1] == string.ascii_lowercase[levels])
    out: list[list[int]] = []
    for z in normalise(np.asarray(emb, dtype=np.float64), codebooks):
        prefix, resid = [], z
        for lvl in range(levels - 1):
            c = _nearest_existing(resid, codebooks[f"level{lvl}"], lvl, vocab)
            if c is None:
                break
            prefix.append(c)
            resid = resid - codebooks[f"level{lvl}"][c]
        out.append(_free_id(tuple(prefix), resid, codebooks[f"level{levels - 1}"], levels, vocab, plain, groups,
                            d_free) if len(prefix) == levels - 1 else [])
    return out


def _nearest_existing(resid: np.ndarray, book: np.ndarray, level: int, vocab: set[str]) -> int | None:
    for c in sq_dists(resid[None, :], book)[0].argsort(kind="stable"):
        if code_token(level, int(c)) in vocab:
            return int(c)
    return None


def _free_id(prefix: tuple[int, ...], resid: np.ndarray, book: np.ndarray, levels: int, vocab: set[str],
             plain: set[tuple[int, ...]], groups: dict[tuple[int, ...], set[int]], d_free: list[int]) -> list[int]:
    """The first free ID along the last level's existing codes by distance (see :func:`extend`); records it."""
    for c in sq_dists(resid[None, :], book)[0].argsort(kind="stable"):
        if code_token(levels - 1, int(c)) not in vocab:
            continue
        key = (*prefix, int(c))
        if key not in plain and key not in groups:
            plain.add(key)
            return list(key)
        if key in groups:
            d = next((d for d in d_free if d not in groups[key]), None)
            if d is not None:
                groups[key].add(d)
                return [*key, d]
    return []


def id_text(codes: list[int], levels: int) -> str:
    """The ID text of full codes (``levels`` level codes, then an optional disambiguation code)."""
    return "".join(code_token(lvl, c) for lvl, c in enumerate(codes))
