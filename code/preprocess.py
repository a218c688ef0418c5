"""Convert a raw KiTS19 or LiTS release into the project's flat h5 dataset.

    python code/preprocess.py --dataset kits --raw_dir data/KiTS19/raw --workers 2
    python code/preprocess.py --dataset lits --raw_dir data/LiTS/raw --workers 2

Writes <out_dir>/<ID>.h5 (image z-scored float32, label binary uint8, label_raw 0/1/2) and
copies train.list / test.list from --lists_dir. Existing outputs are skipped unless
--overwrite. A bad case is reported at the end and does not stop the others; the exit status
is 1 when any case failed. See cogrnet/data/preprocess.py for the steps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cogrnet.config import PRESETS  # noqa: E402
from cogrnet.data.preprocess import (  # noqa: E402
    PREPROCESS_PRESETS, copy_split_lists, find_raw_cases, get_preprocess_preset, list_ids,
    run_preprocessing)
from cogrnet.data.dataset import read_list  # noqa: E402
from cogrnet.errors import ConfigError, run_cli, writable_dir  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(PREPROCESS_PRESETS),
                   help="raw release and preset (window, target, output size)")
    p.add_argument("--raw_dir", required=True,
                   help="raw release folder (KiTS19: holding case_XXXXX/ or the kits19 "
                        "repository root; LiTS: holding volume-N.nii / segmentation-N.nii, "
                        "subfolders searched)")
    p.add_argument("--out_dir", default=None,
                   help="output folder (default: the dataset preset's root_path, "
                        "e.g. data/KiTS19/h5)")
    p.add_argument("--lists_dir", default=None,
                   help="folder with train.list/test.list: the default IDs, copied to "
                        "out_dir (default: the preset's lists folder, e.g. data/KiTS19); "
                        "'none' to use neither")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ids", nargs="+", default=None, help="process exactly these case IDs")
    g.add_argument("--all", action="store_true",
                   help="process every case found under raw_dir instead of the lists' IDs")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo cases whose h5 exists (default: skip them) and replace lists")
    p.add_argument("--out_size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="override the preset's output size (tests, quick looks)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks (errors and internal failures of single cases)")
    a = p.parse_args(argv)

    if a.workers < 1:
        raise ConfigError(f"--workers: need at least 1, got {a.workers}")
    preset = get_preprocess_preset(a.dataset, a.out_size)
    ds = PRESETS[a.dataset]
    out_dir = Path(a.out_dir or ds.root_path)
    lists_dir = None if (a.lists_dir or "").lower() == "none" else (a.lists_dir or ds.lists_dir)

    ids = a.ids
    if ids is None and not a.all and lists_dir is not None:
        ids = list_ids(lists_dir)
    raw_cases = list(find_raw_cases(a.raw_dir, preset, ids).values())
    if not raw_cases:
        raise ConfigError(f"--raw_dir {a.raw_dir}: no {a.dataset} cases found")
    source = ("--ids" if a.ids else "every raw case" if (a.all or ids is None)
              else f"lists in {lists_dir}")
    writable_dir(out_dir, "--out_dir")
    print(f"{len(raw_cases)} case(s) ({source}) -> {out_dir}, size "
          f"{'x'.join(map(str, preset.out_size))}, window {list(preset.window_hu)} HU, "
          f"{a.workers} worker(s)", file=sys.stderr)

    results = run_preprocessing(raw_cases, out_dir, preset, workers=a.workers,
                                overwrite=a.overwrite, progress=not a.no_progress)
    if lists_dir is not None:
        for path in copy_split_lists(lists_dir, out_dir, overwrite=a.overwrite):
            print(f"wrote {path}", file=sys.stderr)
            missing = [i for i in read_list(path) if not (out_dir / f"{i}.h5").exists()]
            if missing:
                print(f"note: {len(missing)} ID(s) of {path.name} have no h5 in {out_dir} yet "
                      f"(e.g. {missing[0]})", file=sys.stderr)

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
