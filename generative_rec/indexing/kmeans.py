"""Seeded k-means (k-means++ start, Lloyd steps) in numpy, shared by the collaborative and semantic schemes.

scikit-learn is not a dependency; catalogues are small enough (10^3–10^5 points, k <= 256) that a dense
numpy implementation is fast. Deterministic for a fixed ``rng`` state.
"""

from __future__ import annotations

import numpy as np


def sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[len(x), len(c)]`` (clipped at 0)."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: ``k`` rows of ``x`` chosen with probability proportional to squared distance."""
    n = len(x)
    centres = np.empty((k, x.shape[1]), dtype=x.dtype)
    centres[0] = x[rng.integers(n)]
    closest = sq_dists(x, centres[:1])[:, 0]
    for j in range(1, k):
        total = closest.sum()
        idx = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        centres[j] = x[idx]
        closest = np.minimum(closest, sq_dists(x, centres[j:j + 1])[:, 0])
    return centres


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50, tol: float = 1e-6,
           n_init: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``x`` into at most ``k`` groups. Returns ``(centroids [k, d], labels [n])``.

    With ``n <= k`` every row is its own cluster (labels ``0..n-1``; unused centroids are zero). An empty
    cluster is re-seeded with the row farthest from its centroid, so all ``k`` clusters are used when
    ``n >= k`` and the rows are not all equal. ``n_init`` runs keep the one of least inertia.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n <= k:
        c = np.zeros((k, x.shape[1]))
        c[:n] = x
        return c, np.arange(n)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(max(1, n_init)):
        c, labels = lloyd(x, kmeans_pp(x, k, rng), iters, tol)
        inertia = float(sq_dists(x, c)[np.arange(n), labels].sum())
        if best is None or inertia < best[0]:
            best = (inertia, c, labels)
    assert best is not None
    return best[1], best[2]


def lloyd(x: np.ndarray, c: np.ndarray, iters: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations from centroids ``c``."""
    n, k = len(x), len(c)
    labels = np.full(n, -1)
    prev_inertia = np.inf
    for _ in range(iters):
        d = sq_dists(x, c)
        labels = d.argmin(1)
        inertia = float(d[np.arange(n), labels].sum())
        counts = np.bincount(labels, minlength=k)
        for j in np.flatnonzero(counts == 0):  # re-seed empty clusters with the worst-fitted rows
            far = int(d[np.arange(n), labels].argmax())
            labels[far] = j
            d[far] = 0.0
            counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        c = sums / np.maximum(counts, 1)[:, None]
        if prev_inertia - inertia <= tol * max(prev_inertia, 1e-12):
            break
        prev_inertia = inertia
    labels = sq_dists(x, c).argmin(1)
    return c, labels
