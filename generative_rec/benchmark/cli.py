"""``genrec benchmark``: the command line."""

from __future__ import annotations

import argparse

from generative_rec.benchmark.runner import run_benchmark
from generative_rec.benchmark.tiers import DEFAULT_MODELS, TIERS


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data", default="data/ml-100k",
                   help="prepared data folder (MovieLens-100K is prepared into it when missing)")
    s.add_argument("--tier", default="cpu", choices=sorted(TIERS), help="grids and budgets (see the module doc)")
    s.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated; 'llm' is the fine-tuned LLM")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--bundle", help="evaluate this LLM bundle (no training)")
    g.add_argument("--llm-config", dest="llm_config",
                   help="train the LLM from this run config first (default: the tier's config)")
    s.add_argument("--set", dest="llm_set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the LLM config (e.g. train.max_steps=50)")
    s.add_argument("--users", type=int, help="seeded sample of N test users (default: all)")
    s.add_argument("--seed", type=int, default=0, help="seed of the user sample and of every baseline")
    s.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    s.add_argument("--output", help="output folder (default runs/benchmark-<tier>)")
    s.add_argument("--resume", action="store_true",
                   help="keep the models already finished in the output folder (and the LLM bundle trained there)")


def command_line(a: argparse.Namespace) -> str:
    """The ``genrec benchmark`` command that reproduces these options (recorded in the report)."""
    parts = ["genrec benchmark", f"--data {a.data}", f"--tier {a.tier}", f"--models {a.models}"]
    parts += [f"--bundle {a.bundle}"] if a.bundle else [f"--llm-config {a.llm_config}"] if a.llm_config else []
    parts += [f"--set {o}" for o in a.llm_set]
    parts += [f"--users {a.users}"] if a.users is not None else []
    parts += [f"--seed {a.seed}"] + ([f"--threads {a.threads}"] if a.threads else [])
    parts += [f"--output {a.output}"] if a.output else []
    return " ".join(parts + (["--resume"] if a.resume else []))


def main_args(a: argparse.Namespace, command: str | None = None) -> dict:
    """Run the benchmark from parsed :func:`add_arguments` options."""
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    command = command or command_line(a)
    return run_benchmark(a.data, a.tier, [m.strip() for m in a.models.split(",") if m.strip()], a.bundle,
                         a.llm_config, a.llm_set, a.users, a.seed, a.output, a.resume, command=command)


def register_cli(subparsers) -> None:
    s = subparsers.add_parser("benchmark", help="every model on the same users: results.json, table, plots",
                              description="Every model on the same users of the same split -> results.json, a table, plots "
                              "(tiers, protocol and outputs: the generative_rec.benchmark module docs).")
    add_arguments(s)
    s.set_defaults(fn=main_args)

