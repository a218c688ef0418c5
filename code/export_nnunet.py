r"""Export coarse labels as an nnU-Net v2 dataset (partial labels through nnU-Net's ignore label).

    python code/export_nnunet.py --root_path ROOT --coarse_dir DIR \
        --out_dir nnUNet_raw/DatasetNNN_Name [--ignore_below W]

Writes ``imagesTr/<ID>_0000.nii.gz``, ``labelsTr/<ID>.nii.gz`` (0 background, 1 target,
2 ignore) and ``dataset.json`` for every case with a coarse label in DIR, on each case's
grid: the coarse label where its confidence is at least W, ignore below, the two annotated
slices exact. Unlabeled scans are left out. The work is
:func:`cogrnet.prepare.export_nnunet.export_nnunet`; docs/REGISTRATION.md says how W was
chosen.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cogrnet.cli import add_debug, add_out_dir, add_root_path, parser
from cogrnet.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    from cogrnet.prepare.export_nnunet import IGNORE_BELOW

    p = parser(__doc__)
    add_root_path(p, "dataset root holding <ID>.h5 (the images and their grid)", required=True)
    p.add_argument("--coarse_dir", required=True,
                   help="coarse labels of code/utils/registration.py (<ID>.h5)")
    add_out_dir(p, "the nnU-Net dataset folder to write, nnUNet_raw/DatasetNNN_Name",
                required=True)
    p.add_argument("--ignore_below", type=float, default=IGNORE_BELOW, metavar="W",
                   help="confidence under which a voxel is labelled ignore (0: none)")
    p.add_argument("--target_name", default=None, metavar="NAME",
                   help="the target's label name in dataset.json (default: the segment "
                        "code/import_dataset.py recorded, else foreground)")
    p.add_argument("--channel_name", default="image", metavar="NAME",
                   help="the image channel's name in dataset.json; nnU-Net normalises CT "
                        "(Hounsfield units) by its CT scheme, any other name by z-score")
    add_debug(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cogrnet.prepare.export_nnunet import ExportedCase, export_nnunet

    def report(case: ExportedCase) -> None:
        print(f"{case.case_id}: {case.ignored / case.voxels:.1%} of {case.voxels} voxels "
              f"ignore, {case.coarse_ignored / max(1, case.coarse):.1%} of the coarse target")

    done = export_nnunet(args.root_path, args.coarse_dir, args.out_dir, args.ignore_below,
                         args.target_name, args.channel_name, on_case=report)
    pooled = done["pooled"]
    print(f"ignored (weight < {args.ignore_below:g}, outside the annotated slices): "
          f"{pooled['ignored']:.1%} of all voxels, {pooled['coarse_ignored']:.1%} of the "
          "coarse target's")
    if pooled["scored"]:
        print(f"kept voxels against the dense labels of {pooled['scored']} case(s): Dice "
              f"{pooled['kept_dice']}, {pooled['kept_error']:.2%} wrong")
    print(f"wrote {done['numTraining']} training case(s) to {args.out_dir} (imagesTr, "
          f"labelsTr, dataset.json)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
