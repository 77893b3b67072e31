"""Recommendation quality of every model on MovieLens-100K: `genrec benchmark`, copied into bench/results.

    python bench/quality.py --tier cpu            # <= 30 min on 2 idle cores, LLM trained from demo_cpu.yaml
    python bench/quality.py --tier full           # a GPU: the LLM trained from full_gpu.yaml, full grids
    python bench/quality.py --tier cpu --bundle runs/demo --resume

Takes every option of `genrec benchmark` (see `genrec benchmark --help`). When it is done, results.md,
results.json and the two PNG plots of the output folder are copied to bench/results/quality-<tier>.*
(the Markdown's image links rewritten to the copies).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLOTS = ("metric_vs_k.png", "accuracy_vs_popularity.png")


def publish(output: Path, tier: str, dest: Path = ROOT / "bench" / "results") -> list[Path]:
    """Copy the benchmark's report and plots from ``output`` to ``dest/quality-<tier>.*``."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = f"quality-{tier}"
    md = (output / "results.md").read_text(encoding="utf-8")
    written = []
    for plot in PLOTS:
        if (output / plot).exists():
            shutil.copyfile(output / plot, dest / f"{stem}-{plot}")
            md = md.replace(f"]({plot})", f"]({stem}-{plot})")
            written.append(dest / f"{stem}-{plot}")
    (dest / f"{stem}.md").write_text(md, encoding="utf-8")
    shutil.copyfile(output / "results.json", dest / f"{stem}.json")
    return [dest / f"{stem}.md", dest / f"{stem}.json", *written]


def main(argv: list[str] | None = None) -> None:
    import logging

    from generative_rec.benchmark import add_arguments, main_args

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args.output = args.output or str(ROOT / "runs" / f"benchmark-{args.tier}")
    argv = sys.argv[1:] if argv is None else argv
    main_args(args, command=" ".join(["python bench/quality.py", *argv]))
    for path in publish(Path(args.output), args.tier):
        print(f"copied: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
