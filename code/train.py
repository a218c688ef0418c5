"""Train CoGRNet (two stages: copy-paste pre-training, then Mean Teacher with Focus Area
mixing) or a baseline (--method sup|mt|uamt|bcp) in one framework.

    python code/train.py --root_path ROOT --coarse_dir DIR --exp NAME --labelnum 5

Runs land in model/<exp>/ (config.json, log.txt, tb/, pretrain_best.pth, best.pth, last.pth).
"""
from __future__ import annotations

import sys
from typing import Sequence

from cogrnet.errors import run_cli
from cogrnet.training.config import parse_config


def main(argv: Sequence[str] | None = None) -> int:
    """Train one run of the command line ``argv`` (None: sys.argv); the exit code."""
    cfg = parse_config(argv)
    from cogrnet.training import train

    stopped = train(cfg).interrupted
    return 0 if stopped is None else 128 + stopped  # the shell's code: 130 SIGINT, 143 SIGTERM


if __name__ == "__main__":
    sys.exit(run_cli(main))
