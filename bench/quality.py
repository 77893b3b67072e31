"""Recommendation quality of every model on MovieLens-100K: `genrec benchmark`, copied into bench/results.

    python bench/quality.py --tier cpu            # <= 30 min on 2 idle cores, LLM trained from cpu_tier.yaml
    python bench/quality.py --tier full           # a GPU: the LLM trained from full_gpu.yaml, full grids
    python bench/quality.py --tier cpu --bundle runs/demo --resume
    python bench/quality.py --tier cpu --dataset amazon   # the shared Amazon Musical Instruments reviews

``--dataset`` picks a data set and prepares it when its folder is missing: ``ml-100k`` (data/ml-100k, the
default) or ``amazon`` (data/amazon-mi, from ../shared/data or $GENREC_SHARED_DATA). The same tier, grids
and LLM config run on both: nothing is tuned per data set.

Takes every option of `genrec benchmark` (see `genrec benchmark --help`). When it is done, results.md,
results.json and the two PNG plots of the output folder are copied to bench/results/quality-<tier>.*
(``quality-<tier>-amazon.*`` for ``--dataset amazon``; the Markdown's image links rewritten to the copies).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLOTS = ("metric_vs_k.png", "accuracy_vs_popularity.png")
AMAZON = (Path(os.environ.get("GENREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
          / "amazon-musical-instruments-2014" / "reviews_Musical_Instruments_5.json.gz")
DATASETS = {  # name -> (prepared folder, PrepareConfig fields, suffix of the published files)
    "ml-100k": (ROOT / "data" / "ml-100k", {"source": "ml-100k"}, ""),
    "amazon": (ROOT / "data" / "amazon-mi", {"source": "amazon", "amazon": {"path": str(AMAZON)}}, "-amazon"),
}


def ensure_dataset(name: str) -> Path:
    """The prepared folder of ``name``, prepared first when it is missing."""
    from generative_rec.data import PrepareConfig, prepare

    folder, fields, _ = DATASETS[name]
    if not (folder / "meta.json").exists():
        print(f"preparing {name} into {folder}", flush=True)
        prepare(PrepareConfig(output=str(folder), **fields))
    return folder


def publish(output: Path, tier: str, dest: Path = ROOT / "bench" / "results", suffix: str = "") -> list[Path]:
    """Copy the benchmark's report and plots from ``output`` to ``dest/quality-<tier><suffix>.*``."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = f"quality-{tier}{suffix}"
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
    p.add_argument("--dataset", choices=sorted(DATASETS),
                   help="a known data set, prepared when missing (sets --data; default: ml-100k)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    suffix = ""
    if args.dataset:
        args.data = str(ensure_dataset(args.dataset))
        suffix = DATASETS[args.dataset][2]
    args.output = args.output or str(ROOT / "runs" / f"benchmark-{args.tier}{suffix}")
    argv = sys.argv[1:] if argv is None else argv
    main_args(args, command=" ".join(["python bench/quality.py", *argv]))
    for path in publish(Path(args.output), args.tier, suffix=suffix):
        print(f"copied: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
