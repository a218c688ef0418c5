"""Run a table of experiments (registration -> training -> test) and write the results table.

    python code/benchmark.py --spec benchmarks/la_half_cpu.json --out_dir docs/benchmarks/la_half_cpu

The spec's format, what counts as finished and ``--collect``: ``cogrnet.benchmark``
(``--help``).
"""
from __future__ import annotations

import sys

from cogrnet.benchmark import build_parser, main  # noqa: F401  (build_parser: the CLI tests)
from cogrnet.errors import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
