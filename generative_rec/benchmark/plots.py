"""The benchmark's plots: metric vs cut-off, accuracy vs popularity bias."""

from __future__ import annotations

import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(names) -> dict[str, str]:
    """One colour per model, the same in every plot; the LLM in black."""
    palette = [f"C{i}" for i in range(10)]
    base = [n for n in names if n != "llm"]
    return {**{n: palette[i % len(palette)] for i, n in enumerate(base)}, "llm": "black"}


def plot_metric_vs_k(records: dict[str, dict], ks, path: Path, where: str = "") -> None:
    """HR@K and NDCG@K for every K, one line per model."""
    plt = _pyplot()
    colors = _colors(records)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("HR", "NDCG"), strict=True):
        for name, r in records.items():
            xs = [k for k in ks if f"{metric}@{k}" in r["metrics"]]
            llm = name == "llm"
            ax.plot(xs, [r["metrics"][f"{metric}@{k}"] for k in xs], marker="*" if llm else "o",
                    markersize=10 if llm else 6, linewidth=2.5 if llm else 1.5, color=colors[name], label=name)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_xticks(list(ks))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Accuracy at cut-off K: full ranking, history masked ({where})" if where else
                 "Accuracy at cut-off K: full ranking, history masked")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_offset(x: float, y: float, placed: list[tuple[float, float]], y_span: float) -> tuple[int, int, str]:
    """The first label position (right-above, right-below, left-above, left-below) that does not sit on an
    earlier label; records where the label went in ``placed``."""
    options = ((5, 4, "left"), (5, -12, "left"), (-5, 4, "right"), (-5, -12, "right"))
    for dx, dy, ha in options:
        key = (x + (0.08 if ha == "left" else -0.08), y + dy / 300 * y_span)
        if all(abs(key[0] - px) > 0.12 or abs(key[1] - py) > 0.05 * y_span for px, py in placed):
            placed.append(key)
            return dx, dy, ha
    placed.append((x, y))
    return options[0]


def plot_accuracy_vs_popularity(records: dict[str, dict], path: Path, where: str = "") -> None:
    """NDCG@10 against PopBias@10 (share of the top-10 among the 10% most popular items), one labelled point per model."""
    plt = _pyplot()
    colors = _colors(records)
    points = {n: (r["metrics"].get("PopBias@10"), r["metrics"].get("NDCG@10")) for n, r in records.items()}
    points = {n: (x, y) for n, (x, y) in points.items() if x is not None and y is not None
              and not (math.isnan(x) or math.isnan(y))}
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    y_span = max([y for _, y in points.values()] + [1e-9]) - min([y for _, y in points.values()] + [0.0])
    placed: list[tuple[float, float]] = []
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=140 if name == "llm" else 60, marker="*" if name == "llm" else "o",
                   color=colors[name], zorder=3)
        dx, dy, ha = _label_offset(x, y, placed, y_span)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=9)
    ax.set_xlabel("PopBias@10 (share of top-10 in the 10% most popular items)")
    ax.set_ylabel("NDCG@10")
    ax.set_xlim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(f"Accuracy vs popularity bias\n({where})" if where else "Accuracy vs popularity bias", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
