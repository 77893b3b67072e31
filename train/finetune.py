"""Entry point of LoRA fine-tuning for `accelerate launch` and torchrun (one CPU to many GPUs, same script):
parses --config/--set and calls `generative_rec.training.train`, the function `genrec train` calls.

    accelerate launch train/finetune.py --config train/configs/demo_cpu.yaml
    accelerate launch --config_file train/accelerate/multi_gpu.yaml train/finetune.py --config train/configs/full_gpu.yaml
    torchrun --nproc_per_node 2 train/finetune.py --config ...      # two gloo processes on one CPU machine

It writes a bundle to the config's `output`.
"""

from __future__ import annotations

import argparse
import logging

from generative_rec.config import load_config
from generative_rec.training import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run YAML (see train/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle / checkpoints")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train(load_config(args.config, args.set), resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
