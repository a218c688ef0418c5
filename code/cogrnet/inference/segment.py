"""Segment image files (NIfTI, NRRD, MHA) with a trained checkpoint: :func:`predict`, the
library behind ``code/predict.py``.

Each mask is written as NIfTI on the input's grid (same size, spacing, origin, direction),
in the one axis convention of :mod:`cogrnet.data.nifti`, so ``test.py --pred_dir`` scores
the masks directly. The scan gets the preprocessing the checkpoint records
(:func:`cogrnet.inference.settings.scan_preprocessing`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.nifti import MASK_SUFFIX, case_ids, image_files, read_image_xyz, write_mask_like
from ..errors import ConfigError, DataError, writable_dir
from ..fileio import removed_if_left_empty
from ..runtime import resolve_device
from .model import load_model
from .settings import (InferenceFlags, InferenceSettings, ScanPreprocessing, inference_preset,
                       scan_preprocessing)
from .sliding_window import postprocess, predict_volume


def segment_image(model: torch.nn.Module, image: np.ndarray, settings: InferenceSettings
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Segment one image ``(X, Y, Z)`` with the sliding windows of ``settings``: returns
    (class map ``(X, Y, Z)`` uint8, probabilities ``(K, X, Y, Z)`` float32)."""
    prob = predict_volume(model, image, settings.patch, strides=settings.strides,
                          overlap=settings.overlap, sw_batch_size=settings.sw_batch_size,
                          mode=settings.mode, device=settings.device, amp=settings.amp)
    return postprocess(prob, nms=settings.keep_largest), prob


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files of ``--input``: files as given, folders as their image files."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise DataError(f"--input {path}: folder holds no image file (.nii.gz, .nii, "
                                ".nrrd, .mha)")
            files += found
        else:
            files.append(path)
    return files


def output_paths(inputs: list[Path], output: str) -> list[Path]:
    """One mask path per input: ``output`` itself for one input named ``*.nii(.gz)``, else
    ``output/<ID>_mask.nii.gz`` (IDs by :func:`cogrnet.data.nifti.case_ids`)."""
    out = Path(output)
    is_file = out.name.endswith((".nii.gz", ".nii")) and not output.endswith(("/", "\\"))
    if len(inputs) > 1 and is_file:
        raise ConfigError("--out_dir must be a folder when several --input files are given")
    paths = [out] if is_file else [out / f"{i}{MASK_SUFFIX}" for i in case_ids(inputs)]
    if len(set(paths)) != len(paths):
        raise ConfigError("--input: two inputs share a name; give them separate runs")
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"--out_dir {path}: is a folder, not a mask file name")
    return paths


def predict(checkpoint: str, inputs: Sequence[str | Path], output: str,
            flags: InferenceFlags = InferenceFlags(), dataset: str | None = None,
            normalize: str | None = None, window: Sequence[float] | None = None,
            log: Callable[[str], None] = print, progress: bool = True) -> list[Path]:
    """Segment each image of ``inputs`` (files or folders of them) with ``checkpoint`` and
    write its mask (``output``: a ``.nii.gz`` for one input, else a folder); returns the
    mask paths. ``flags`` are the inference flags, the other arguments ``predict.py``'s
    other flags; ``log`` gets the console lines, ``progress`` shows a bar over the scans
    (with the time left) when there are several. Arguments, the checkpoint and the output
    folders are checked before any inference; an output folder this call made is removed
    again when it fails before writing into it."""
    if window is not None and window[1] <= window[0]:
        raise ConfigError(f"--window {window[0]} {window[1]}: HI must be above LO")
    files = expand_inputs(inputs)
    outputs = output_paths(files, output)
    dev = resolve_device(flags.device)
    model, ckpt = load_model(checkpoint, ema=flags.ema, device=dev)
    preset = inference_preset(ckpt["config"], dataset)
    settings = InferenceSettings.from_checkpoint(ckpt, checkpoint, flags, preset,
                                                 dataset is not None, dev)
    prep = scan_preprocessing(ckpt["config"], preset, window, normalize)
    log(f"preprocessing: {prep.describe()}")
    folders = list(dict.fromkeys(p.parent for p in outputs))
    with removed_if_left_empty(folders):
        for folder in folders:  # before any inference
            writable_dir(folder, "--out_dir")
        _segment_files(model, settings, prep, list(zip(files, outputs)), log, progress)
    where = outputs[0] if len(outputs) == 1 else outputs[0].parent
    log(f"wrote {len(outputs)} mask(s) -> {where}")
    return outputs


def _segment_files(model: torch.nn.Module, settings: InferenceSettings,
                   prep: ScanPreprocessing, pairs: list[tuple[Path, Path]],
                   log: Callable[[str], None], progress: bool) -> None:
    """Segment each ``(image file, mask file)`` of ``pairs``, one console line each; a bar
    over the scans (with the time left) when ``progress`` and there are several."""
    shown = progress and len(pairs) > 1
    bar = tqdm(total=len(pairs), desc="predict", unit="scan", dynamic_ncols=True,
               disable=not shown)
    say = bar.write if shown else log
    with bar:
        for src, dst in pairs:
            image, ref = read_image_xyz(src)
            pred, _ = segment_image(model, prep.apply(image), settings)
            write_mask_like(pred, ref, dst)
            say(f"{src} -> {dst}  ({int((pred > 0).sum())} foreground voxels of "
                f"{pred.size})")
            bar.update(1)
