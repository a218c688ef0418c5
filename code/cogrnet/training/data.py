"""The training data of one run: which IDs are labeled, unlabeled and for validation, and
their volumes with the targets the method trains on."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import CaseStore, find_list, read_list, require_foreground
from ..data.samplers import TrainVolume
from ..errors import ConfigError, DataError
from ..evaluation import require_scorable
from ..train_config import TrainConfig

LABELED_NEEDS = "a labeled case needs some (is it the right file?)"
LOG = logging.getLogger("cogrnet.train")  # the trainer's log (log.txt and the console)


@dataclass
class RunSplit:
    labeled: list[str]
    unlabeled: list[str]
    val: list[str]
    val_source: str


def resolve_split(store: CaseStore, cfg: TrainConfig) -> RunSplit:
    """Labeled = the first ``labelnum`` train IDs; validation = ``--val_list`` (``auto``: a
    ``val.list`` next to the lists, else the last 10% of the train list, and no validation
    when one of those has no dense label; ``none``: no validation); unlabeled = the rest.
    Validation IDs are excluded from both pools. A named list whose cases lack dense labels
    is an error."""
    lists_dir = cfg.lists_dir
    if cfg.patch_source:  # the custom preset: say what was made of the data
        LOG.info(f"dataset {cfg.dataset}: patch {tuple(cfg.patch_size)} ("
                 f"{cfg.patch_source}), sliding-window strides {tuple(cfg.strides)}, "
                 f"schedule {_schedule(cfg)}")
    train = store.split("train", lists_dir)
    val_arg = str(cfg.val_list)
    val, source = validation_ids(store.root, lists_dir, val_arg, train)
    val = store.check_ids(val, source)
    unlabeled_val = [i for i in val if not store.has_label(i)]
    if unlabeled_val and val_arg == "auto":
        LOG.info(f"validation: {len(unlabeled_val)} of the {len(val)} validation case(s) "
                 f"({source}) have no dense label, e.g. {unlabeled_val[0]}; no validation, "
                 "best checkpoints hold the last weights (name densely labelled cases with "
                 "--val_list)")
        val, source = [], "none: no dense labels"
    elif unlabeled_val:
        raise ConfigError(f"--val_list {source}: case(s) {', '.join(unlabeled_val[:5])} have no "
                          f"dense label in {store.root} (validation needs one); name other "
                          "cases or pass --val_list none to keep the last weights")
    stray = [i for i in val if i not in train]
    if stray:
        raise ConfigError(f"--val_list {source}: ID(s) not in the train list: {', '.join(stray[:5])}")
    pool = [i for i in train if i not in set(val)]
    n = int(cfg.labelnum)
    if n < 1 or n > len(pool):
        raise ConfigError(f"--labelnum {n}: must be between 1 and {len(pool)} (train list minus "
                          f"{len(val)} validation IDs)")
    labeled = train[:n]
    clash = [i for i in labeled if i in set(val)]
    if clash:
        raise ConfigError(f"--labelnum {n}: labeled IDs {', '.join(clash[:5])} are also in the "
                          f"validation list {source}")
    unlabeled = [i for i in pool if i not in set(labeled)]
    return RunSplit(labeled, unlabeled, val, source)


def validation_ids(root: str | Path, lists_dir: str | Path | None, val_arg: str,
                   train: list[str]) -> tuple[list[str], str]:
    """``(IDs, source)`` of ``--val_list`` from the list files alone: ``none`` -> no IDs;
    ``auto`` -> ``val.list`` beside the lists, else the last 10% of ``train``; else the
    named split or list path."""
    if val_arg == "none":
        return [], "none"
    if val_arg == "auto":
        try:
            path = find_list(root, "val", lists_dir)
        except DataError as err:
            if "no list file found" not in str(err):
                raise
            k = max(1, round(0.1 * len(train)))
            return train[-k:], f"last {k} IDs of the train list"
    else:
        path = find_list(root, val_arg, lists_dir)
    return read_list(path), str(path)


def _schedule(cfg: TrainConfig) -> str:
    """The iteration schedule of a resolved config, in words."""
    if cfg.max_iteration is not None:
        return f"{cfg.max_iteration} iterations"
    return (f"{cfg.pre_max_iteration} pre-training + {cfg.self_max_iteration} "
            "self-training iterations")


def labeled_volumes(store: CaseStore, ids: list[str], cfg: TrainConfig) -> list[TrainVolume]:
    """Labeled volumes with targets ``label`` (+ ``label_b`` in two-stream coarse mode,
    + ``weight`` when confidence weighting is on or with ``--label_source slices``)."""
    out = []
    source = cfg.label_source
    for case_id in ids:
        if source == "full":
            case = store.get(case_id, with_label=True)
            require_foreground(case.label, case.path, why=LABELED_NEEDS)
            out.append(TrainVolume(case_id, case.image, {"label": case.label}))
            continue
        from ..annotation.io import coarse_path, read_coarse_label

        case = store.get(case_id, with_label=False)
        coarse = read_coarse_label(cfg.coarse_dir, case_id, expected_shape=case.shape)
        targets: dict[str, np.ndarray] = {}
        if source == "slices":
            out.append(TrainVolume(case_id, case.image, slice_targets(coarse, case_id, cfg)))
            continue
        if cfg.coarse_mode == "two_stream":
            # the reference's two label sets: each plane's propagated label with the other
            # plane's annotated slice pasted in
            (ax_a, ax_b), (i_a, i_b) = coarse.axes, coarse.indices
            targets["label"] = paste_slice(coarse.label_a, coarse.annotation, ax_b, i_b)
            targets["label_b"] = paste_slice(coarse.label_b, coarse.annotation, ax_a, i_a)
        else:
            targets["label"] = coarse.label
        where = coarse_path(cfg.coarse_dir, case_id)
        for key, name in (("label", "label_a" if "label_b" in targets else "label"),
                          ("label_b", "label_b")):
            if key in targets:
                require_foreground(targets[key], where, f"coarse '{name}'", LABELED_NEEDS)
        if cfg.confidence_weighting:
            targets["weight"] = coarse.weight.astype(np.float32)
        out.append(TrainVolume(case_id, case.image, targets))
    return out


def slice_targets(coarse, case_id: str, cfg: TrainConfig) -> dict[str, np.ndarray]:
    """``--label_source slices``: the annotation (the two painted slices, 0 elsewhere) as
    ``label`` and a float32 ``weight``, 1 on those slices and 0 elsewhere, so that every
    loss on the labeled volume counts its two annotated slices only (the other voxels are
    ignored, not background); the weight travels through crops, flips and mixing with the
    label."""
    from ..annotation.dpa import slices_mask
    from ..annotation.io import coarse_path

    where = coarse_path(cfg.coarse_dir, case_id)
    annotation = coarse.annotation
    require_foreground(annotation, where, "'annotation'", LABELED_NEEDS)
    return {"label": annotation.astype(np.uint8),
            "weight": slices_mask(annotation.shape, coarse.axes, coarse.indices
                                  ).astype(np.float32)}


def check_val_cases(store: CaseStore, ids: list[str]) -> None:
    """Read (and cache) the validation cases with their labels at start-up, so that a broken
    validation file stops the run before training rather than at the first validation."""
    for case_id in ids:
        require_scorable(store.get(case_id, with_label=True))


def paste_slice(label: np.ndarray, source: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A copy of ``label`` whose slice ``index`` along ``axis`` is taken from ``source``."""
    from ..annotation.dpa import plane_slice

    out = label.copy()
    where = plane_slice(label.ndim, axis, index)
    out[where] = source[where]
    return out


def unlabeled_volumes(store: CaseStore, ids: list[str]) -> list[TrainVolume]:
    """Images only: the labels of unlabeled cases are never read."""
    return [TrainVolume(i, store.get(i, with_label=False).image) for i in ids]


def check_coarse_files(cfg: TrainConfig, labeled: list[str]) -> None:
    """With labels from the registration: every labeled case has its coarse label file
    (checked before the run folder is filled); a one-line :class:`DataError` naming the
    first missing file and how many are missing otherwise."""
    if cfg.label_source not in ("coarse", "slices"):
        return
    from ..annotation.io import coarse_path

    missing = [i for i in labeled if not coarse_path(cfg.coarse_dir, i).is_file()]
    if missing:
        raise DataError(f"{coarse_path(cfg.coarse_dir, missing[0])}: coarse label file not "
                        f"found: {len(missing)} of the {len(labeled)} labeled case(s) "
                        f"(--labelnum {cfg.labelnum}) have none ({', '.join(missing[:5])}); "
                        f"run code/utils/registration.py with the same --labelnum, or lower "
                        "--labelnum to the cases it made")


def check_coarse_dir(cfg: TrainConfig) -> None:
    if cfg.label_source in ("coarse", "slices"):
        d = cfg.coarse_dir
        if not d:
            raise ConfigError(f"--coarse_dir is required with --label_source {cfg.label_source} "
                              "(make it with code/utils/registration.py)")
        if not Path(d).is_dir():
            raise ConfigError(f"--coarse_dir {d}: folder not found "
                              "(make it with code/utils/registration.py)")


def load_training_volumes(store: CaseStore, split: RunSplit, cfg: TrainConfig,
                          needs_unlabeled: bool, check_validation: bool
                          ) -> tuple[list[TrainVolume], list[TrainVolume]]:
    """The labeled and (``needs_unlabeled``: a stage trains on them) unlabeled volumes of
    ``split`` in memory, with what was loaded in the log; ``check_validation``: the
    validation cases are checked now (a broken file fails before the first step)."""
    LOG.info(f"labeled {len(split.labeled)}, unlabeled {len(split.unlabeled)}, validation "
             f"{len(split.val)} ({split.val_source}); labels: {cfg.label_source}")
    start = time.perf_counter()
    labeled = labeled_volumes(store, split.labeled, cfg)
    unlabeled = unlabeled_volumes(store, split.unlabeled) if needs_unlabeled else []
    if needs_unlabeled and not unlabeled:
        raise ConfigError(f"method {cfg.method} needs unlabeled volumes but the train list "
                          "has none left after the labeled and validation IDs")
    LOG.info(f"loaded {len(labeled) + len(unlabeled)} volumes into memory in "
             f"{time.perf_counter() - start:.1f} s")
    patch = cfg.patch_size
    small = [f"{v.case_id} {tuple(v.image.shape)}" for v in labeled + unlabeled
             if any(s < p for s, p in zip(v.image.shape, patch))]
    if small:
        LOG.info(f"{len(small)} volume(s) smaller than the patch {tuple(patch)} on some axis "
                 f"are zero-padded: {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}")
    if check_validation and split.val:
        check_val_cases(store, split.val)
    return labeled, unlabeled


def batch_to_device(batch: dict[str, np.ndarray], device: torch.device,
                    channels_last: bool, pin: bool = False) -> dict[str, torch.Tensor]:
    """Host arrays -> device tensors: the image (``channels_last``: in the channels-last 3D
    layout) as is, ``weight`` as float32, the label maps as int64; ``pin``: through
    page-locked memory (an asynchronous copy on CUDA)."""
    out = {}
    for key, array in batch.items():
        tensor = torch.from_numpy(array)
        tensor = (tensor.pin_memory() if pin else tensor).to(device, non_blocking=True)
        if key == "image":
            if channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
        elif key == "weight":
            tensor = tensor.float()
        else:
            tensor = tensor.long()
        out[key] = tensor
    return out
