"""Convert a raw KiTS19 or LiTS release into the project's flat h5 dataset.

    python code/preprocess.py --dataset kits --raw_dir data/KiTS19/raw --workers 2
    python code/preprocess.py --dataset lits --raw_dir data/LiTS/raw --workers 2

Writes <out_dir>/<ID>.h5 (image z-scored float32, label binary uint8, label_raw 0/1/2) and
copies train.list / test.list from --lists_dir. Existing outputs are skipped unless
--overwrite. A bad case is reported at the end and does not stop the others; the exit status
is 1 when any case failed. See cogrnet/data/preprocess.py for the steps
(:func:`cogrnet.data.preprocess.preprocess_release` does the work).
"""
from __future__ import annotations

import argparse
import sys

from cogrnet.data.preprocess import PREPROCESS_PRESETS, CaseChoice, preprocess_release
from cogrnet.cli import add_debug, add_out_dir, add_progress, add_workers, parser
from cogrnet.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--dataset", required=True, choices=sorted(PREPROCESS_PRESETS),
                   help="raw release and preset (window, target, output size)")
    p.add_argument("--raw_dir", required=True,
                   help="raw release folder (KiTS19: holding case_XXXXX/ or the kits19 "
                        "repository root; LiTS: holding volume-N.nii / segmentation-N.nii, "
                        "subfolders searched)")
    add_out_dir(p, default=None,
                help="output folder (default: the dataset preset's root_path, "
                     "e.g. data/KiTS19/h5)")
    p.add_argument("--lists_dir", default=None,
                   help="folder with train.list/test.list: the default IDs, copied to "
                        "out_dir (default: the preset's lists folder, e.g. data/KiTS19); "
                        "'none' to use neither")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ids", nargs="+", default=None, help="process exactly these case IDs (default: the lists' IDs)")
    g.add_argument("--all", action="store_true",
                   help="process every case found under raw_dir instead of the lists' IDs")
    add_workers(p, "parallel processes")
    p.add_argument("--overwrite", action="store_true",
                   help="redo cases whose h5 exists (default: skip them) and replace lists")
    p.add_argument("--out_size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="override the preset's output size (tests, quick looks; default: the "
                        "preset's)")
    add_progress(p)
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks (errors and internal failures of single cases)")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)

    cases = CaseChoice(lists_dir=a.lists_dir, ids=a.ids, all_cases=a.all)
    results = preprocess_release(a.dataset, a.raw_dir, a.out_dir, cases, a.workers,
                                 a.overwrite, a.out_size, not a.no_progress)
    count = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"done {count['done']}, skipped (existing) {count['skipped']}, "
          f"failed {count['failed']}", file=sys.stderr)
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"failed {r.case_id}: {r.message}", file=sys.stderr)
        if (a.debug or "--debug" in sys.argv[1:]) and r.detail:  # run_cli strips --debug
            print(r.detail, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
