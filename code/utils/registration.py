"""Dual-Plane Annotation -> 3D coarse labels for the labeled cases of a split.

    python code/utils/registration.py --root_path ROOT --split train --labelnum N --out_dir DIR

Writes ``DIR/<ID>.h5`` (label, label_a, label_b, weight, annotation) per case, the fused
label also as ``DIR/<ID>.nii.gz`` on the image's grid and a picture ``DIR/png/<ID>.png``,
and ``DIR/summary.json``. ``--annotations`` reads ``<ID>.h5`` files or painted label maps
(``<ID>.nii.gz``, ``.nrrd``, ``.mha``: the two planes are found from the painted slices).
See docs/REGISTRATION.md. The work is :func:`cogrnet.prepare.registration.register_dataset`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

try:
    import cogrnet  # noqa: F401  (nothing else: a script outside code/ needs the install)
except ImportError:
    sys.exit("cogrnet is not installed: run `make setup` or `pip install -e .`")

from cogrnet.annotation import process_case  # noqa: E402
from cogrnet.errors import run_cli  # noqa: E402
from cogrnet.prepare.registration import (build_parser, register_dataset,  # noqa: E402
                                          report_registration, request_from_args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # process_case is looked up here at each call: a test may replace this module's one
    summary = register_dataset(request_from_args(args), case_fn=process_case)
    return report_registration(summary, Path(args.out_dir))


if __name__ == "__main__":
    sys.exit(run_cli(main))
