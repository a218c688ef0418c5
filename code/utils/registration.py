"""Dual-Plane Annotation -> 3D coarse labels for the labeled cases of a split.

    python code/utils/registration.py --root_path ROOT --split train --labelnum N --out_dir DIR

Writes ``DIR/<ID>.h5`` (label, label_a, label_b, weight, annotation) per case, the fused
label also as ``DIR/<ID>.nii.gz`` on the image's grid and a picture ``DIR/png/<ID>.png``,
and ``DIR/summary.json``. ``--annotations`` reads ``<ID>.h5`` files or painted label maps
(``<ID>.nii.gz``, ``.nrrd``, ``.mha``: the two planes are found from the painted slices).
See docs/REGISTRATION.md. The work is :func:`cogrnet.prepare.registration.register_dataset`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

try:
    import cogrnet  # noqa: F401  (nothing else: a script outside code/ needs the install)
except ImportError:
    sys.exit("cogrnet is not installed: run `make setup` or `pip install -e .`")

from cogrnet.annotation import POLICIES, process_case  # noqa: E402
from cogrnet.annotation.refine import REFINEMENTS  # noqa: E402
from cogrnet.annotation.fuse import FUSIONS  # noqa: E402
from cogrnet.presets import PRESETS  # noqa: E402
from cogrnet.errors import run_cli  # noqa: E402
from cogrnet.prepare.registration import (RegistrationRequest, register_dataset,  # noqa: E402
                                          report_registration)


def build_parser() -> argparse.ArgumentParser:
    from cogrnet.cli import (add_dataset, add_labelnum, add_lists_dir, add_out_dir,
                             add_root_path, add_run_switches, add_switch, add_workers, parser)

    p = parser("Turn two annotated orthogonal slices per labeled volume into 3D coarse "
               "labels (slice-chain registration of each plane, corrected by the other "
               "plane, then fused).")
    add_dataset(p, "preset giving the default root_path and axes (default: custom when "
                   "--root_path holds code/import_dataset.py's import.json, else la)",
                choices=sorted(PRESETS))
    add_root_path(p, "dataset root (default: the preset's)")
    p.add_argument("--split", default="train", help="split name or list-file path")
    add_lists_dir(p, "extra folder to look for <split>.list (default: the preset's)")
    add_labelnum(p, "the first N IDs of the split are labeled (default: the annotated cases "
                    "code/import_dataset.py recorded, else the preset's)")
    p.add_argument("--ids", nargs="+", default=None,
                   help="process these IDs instead (default: the split's labeled IDs)")
    add_out_dir(p, "output folder for <ID>.h5 + summary.json", required=True)
    add_workers(p, "processes over volumes")
    p.add_argument("--slice_policy", default="middle", choices=POLICIES,
                   help="simulated DPA: which slices (middle = LA reference, largest)")
    p.add_argument("--axes", type=int, nargs=2, default=None, metavar=("A", "B"),
                   help="annotated axes of planes A and B (default: the preset's, LA 2 1)")
    p.add_argument("--annotations", default=None,
                   help="folder of user annotations instead of simulating them from full "
                        "labels: painted label maps <ID>.nii.gz (.nrrd, .mha) on the image's "
                        "grid, or <ID>.h5 (key 'annotation' + attrs axes/indices) (default: "
                        "none, simulate)")
    p.add_argument("--label_value", type=int, default=None,
                   help="target value in multi-label painted maps (default: the one "
                        "code/import_dataset.py recorded, else the map's one non-zero value)")
    p.add_argument("--segment", default=None, metavar="NAME",
                   help="instead of --label_value: the target segment's name in 3D Slicer "
                        ".seg.nrrd maps (default: the one code/import_dataset.py recorded, "
                        "else a file's only segment)")
    add_switch(p, "previews", True, "also write <ID>.nii.gz (coarse label on the image's "
               "grid) and png/<ID>.png")
    p.add_argument("--fusion", default="sdf", choices=FUSIONS, help="plane fusion")
    p.add_argument("--refine", default=None, choices=REFINEMENTS,
                   help="image-driven refinement of the fused label near its boundary: none, "
                        "or intensity (histograms of the annotated slices; docs/REGISTRATION.md)"
                        " (default: the preset's; la and phantom: intensity, others: none)")
    p.add_argument("--propagation", nargs="+", default=[], metavar="NAME=VALUE",
                   help="slice-chain settings (PropagationParams in "
                        "cogrnet/annotation/propagate.py), e.g. demons=diffeomorphic levels=2 "
                        "iterations=80 (default: as documented in docs/REGISTRATION.md)")
    p.add_argument("--no_cross", action="store_true",
                   help="ablation: do not correct/stop a plane with the other plane")
    p.add_argument("--seed", type=int, default=1337,
                   help="recorded; the pipeline itself has no randomness")
    add_run_switches(p, device=False, amp=False)
    return p


def request_from_args(args: argparse.Namespace) -> RegistrationRequest:
    """The library's request for the parsed flags."""
    return RegistrationRequest(
        out_dir=args.out_dir, dataset=args.dataset, root_path=args.root_path, split=args.split,
        lists_dir=args.lists_dir, labelnum=args.labelnum, ids=args.ids, workers=args.workers,
        slice_policy=args.slice_policy, axes=args.axes, annotations=args.annotations,
        label_value=args.label_value, segment=args.segment, previews=args.previews,
        fusion=args.fusion, refine=args.refine, propagation=args.propagation,
        cross_plane=not args.no_cross, seed=args.seed, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # process_case is looked up here at each call: a test may replace this module's one
    summary = register_dataset(request_from_args(args), case_fn=process_case)
    return report_registration(summary, Path(args.out_dir))


if __name__ == "__main__":
    sys.exit(run_cli(main))
