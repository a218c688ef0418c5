"""Make a resampled copy of a dataset (e.g. LA at half resolution for CPU experiments).

    python code/utils/resample_dataset.py --root_path ../shared/data/LA --out_dir data/LA_half \
        --factor 0.5 --lists_dir data/LA

Images are resampled linearly, labels with nearest neighbour; the copy is written in the flat
layout (``<out_dir>/<ID>.h5``) with the list files of the source (``train``, ``val``, ``test``
where they exist). Existing cases are skipped unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from cogrnet.data.dataset import CaseStore, find_list, read_list, write_case_h5  # noqa: E402
from cogrnet.data.preprocess import resize_volume  # noqa: E402
from cogrnet.errors import ConfigError, DataError, run_cli  # noqa: E402


def resampled_shape(shape, factor: float) -> tuple[int, int, int]:
    """``round(side * factor)`` per axis, at least 1."""
    return tuple(max(1, int(round(s * factor))) for s in shape)  # type: ignore[return-value]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_path", required=True, help="source dataset root")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--factor", type=float, default=0.5, help="scale per axis")
    p.add_argument("--lists_dir", default=None, help="extra folder with list files (e.g. data/LA)")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--image_dtype", choices=("float32", "float16"), default="float32",
                   help="stored image type (float16 halves the files; loading casts to float32)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    a = p.parse_args(argv)
    if not 0 < a.factor <= 4:
        raise ConfigError(f"--factor {a.factor}: must be in (0, 4]")
    store = CaseStore(a.root_path, cache=False)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    for split in a.splits:
        try:
            path = find_list(store.root, split, a.lists_dir)
        except DataError:
            continue
        split_ids = [i for i in read_list(path) if i not in ids]
        ids += split_ids
        shutil.copyfile(path, out / f"{split}.list")
    if not ids:
        raise ConfigError(f"no list file for {', '.join(a.splits)} under {a.root_path}"
                          + (f" or {a.lists_dir}" if a.lists_dir else ""))
    written, kept, missing = 0, 0, []
    for case_id in tqdm(ids, desc="resample"):
        dst = out / f"{case_id}.h5"
        if dst.exists() and not a.overwrite:
            kept += 1
            continue
        try:
            case = store.get(case_id, with_label=True)
        except DataError as err:
            missing.append(f"{case_id} ({err})")
            continue
        size = resampled_shape(case.shape, a.factor)
        write_case_h5(dst, resize_volume(case.image, size, order=1).astype(a.image_dtype),
                      resize_volume(case.label, size, order=0))
        written += 1
    print(f"{out}: wrote {written} case(s), kept {kept} existing, {len(missing)} not readable")
    for line in missing[:5]:
        print(f"  not readable: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
