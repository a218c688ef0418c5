"""Make a resampled copy of a dataset (e.g. LA at half resolution for CPU experiments).

    python code/utils/resample_dataset.py --root_path data/LA --out_dir data/LA_half \
        --factor 0.5 --lists_dir data/LA

Images are resampled linearly, labels with nearest neighbour; the copy is written in the flat
layout (``<out_dir>/<ID>.h5``) with the list files of the source (``train``, ``val``, ``test``
where they exist). Existing cases are skipped unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys

try:
    import cogrnet  # noqa: F401  (nothing else: a script outside code/ needs the install)
except ImportError:
    sys.exit("cogrnet is not installed: run `make setup` or `pip install -e .`")
from cogrnet.data.resample import resample_dataset  # noqa: E402
from cogrnet.cli import add_debug, add_out_dir, add_progress, parser  # noqa: E402
from cogrnet.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--root_path", required=True, help="source dataset root")
    add_out_dir(p, "root of the resampled copy", required=True)
    p.add_argument("--factor", type=float, default=0.5, help="scale per axis")
    p.add_argument("--lists_dir", default=None, help="extra folder with list files, e.g. data/LA (default: none)")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"],
                   help="lists to copy (where they exist)")
    p.add_argument("--image_dtype", choices=("float32", "float16"), default="float32",
                   help="stored image type (float16 halves the files; loading casts to float32)")
    p.add_argument("--overwrite", action="store_true", help="redo existing cases")
    add_progress(p)
    add_debug(p)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    summary = resample_dataset(a.root_path, a.out_dir, a.factor, a.lists_dir, a.splits,
                               a.image_dtype, a.overwrite, progress=not a.no_progress)
    print(f"{summary.out_dir}: wrote {summary.written} case(s), kept {summary.kept} existing, "
          f"{len(summary.missing)} not readable")
    for line in summary.missing[:5]:
        print(f"  not readable: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
