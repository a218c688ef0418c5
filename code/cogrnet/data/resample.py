"""A resampled copy of a dataset (e.g. LA at half resolution for CPU experiments): the
library behind ``code/utils/resample_dataset.py``."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from ..errors import ConfigError, DataError, writable_dir
from .dataset import CaseStore, find_list, read_list, write_case_h5
from .transforms import resize_volume


@dataclass
class ResampleSummary:
    """Cases written, existing cases kept, and the cases that could not be read (with why)."""

    out_dir: Path
    written: int = 0
    kept: int = 0
    missing: list[str] = field(default_factory=list)


def resampled_shape(shape, factor: float) -> tuple[int, int, int]:
    """``round(side * factor)`` per axis, at least 1."""
    return tuple(max(1, int(round(s * factor))) for s in shape)  # type: ignore[return-value]


def resample_dataset(root_path: str | Path, out_dir: str | Path, factor: float = 0.5,
                     lists_dir: str | Path | None = None,
                     splits: Sequence[str] = ("train", "val", "test"),
                     image_dtype: str = "float32", overwrite: bool = False,
                     progress: bool = True) -> ResampleSummary:
    """Write ``out_dir/<ID>.h5`` for every case of the ``splits`` lists found under
    ``root_path`` (or ``lists_dir``), each axis scaled by ``factor``: images linear, labels
    nearest neighbour, images stored as ``image_dtype``; the list files are copied. Existing
    cases are kept unless ``overwrite``."""
    if not 0 < factor <= 4:
        raise ConfigError(f"--factor {factor}: must be in (0, 4]")
    store = CaseStore(root_path, cache=False)
    out = writable_dir(out_dir, "--out_dir")
    ids: list[str] = []
    for split in splits:
        try:
            path = find_list(store.root, split, lists_dir)
        except DataError:
            continue
        split_ids = [i for i in read_list(path) if i not in ids]
        ids += split_ids
        shutil.copyfile(path, out / f"{split}.list")
    if not ids:
        raise ConfigError(f"no list file for {', '.join(splits)} under {root_path}"
                          + (f" or {lists_dir}" if lists_dir else ""))
    summary = ResampleSummary(out)
    for case_id in tqdm(ids, desc="resample", unit="case", disable=not progress):
        dst = out / f"{case_id}.h5"
        if dst.exists() and not overwrite:
            summary.kept += 1
            continue
        try:
            case = store.get(case_id, with_label=True)
        except DataError as err:
            summary.missing.append(f"{case_id} ({err})")
            continue
        size = resampled_shape(case.shape, factor)
        write_case_h5(dst, resize_volume(case.image, size, order=1).astype(image_dtype),
                      resize_volume(case.label, size, order=0))
        summary.written += 1
    return summary
