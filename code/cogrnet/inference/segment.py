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

from tqdm import tqdm

from ..data.nifti import MASK_SUFFIX, case_ids, image_files, read_image_xyz, write_mask_like
from ..errors import ConfigError, DataError, writable_dir
from ..fileio import removed_if_left_empty
from ..runtime import resolve_device
from .model import checkpoint_patch, load_model
from .settings import inference_preset, inference_strides, scan_preprocessing
from .sliding_window import segment_image


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


def predict(checkpoint: str, inputs: Sequence[str | Path], output: str, ema: bool = False,
            dataset: str | None = None, stride_xy: int | None = None,
            stride_z: int | None = None, overlap: float | None = None,
            mode: str = "constant", sw_batch_size: int = 4, nms: bool = True,
            normalize: str | None = None, window: Sequence[float] | None = None,
            device: str = "auto", amp: bool | None = None,
            log: Callable[[str], None] = print, progress: bool = True) -> list[Path]:
    """Segment each image of ``inputs`` (files or folders of them) with ``checkpoint`` and
    write its mask (``output``: a ``.nii.gz`` for one input, else a folder); returns the
    mask paths. The arguments are ``predict.py``'s flags; ``log`` gets the console lines,
    ``progress`` shows a bar over the scans (with the time left) when there are several. Arguments, the checkpoint
    and the output folders are checked before any inference; an output folder this call
    made is removed again when it fails before writing into it."""
    if sw_batch_size < 1:
        raise ConfigError(f"--sw_batch_size {sw_batch_size}: must be >= 1")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap {overlap}: must be in [0, 1)")
    if window is not None and window[1] <= window[0]:
        raise ConfigError(f"--window {window[0]} {window[1]}: HI must be above LO")
    files = expand_inputs(inputs)
    outputs = output_paths(files, output)
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, ema=ema, device=dev)
    patch = checkpoint_patch(ckpt, checkpoint)
    preset = inference_preset(ckpt["config"], dataset)
    strides = None if overlap is not None else inference_strides(
        ckpt["config"], preset, stride_xy, stride_z, dataset is not None)
    prep = scan_preprocessing(ckpt["config"], preset, window, normalize)
    log(f"preprocessing: {prep.describe()}")
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    folders = list(dict.fromkeys(p.parent for p in outputs))
    with removed_if_left_empty(folders):
        for folder in folders:  # before any inference
            writable_dir(folder, "--out_dir")
        shown = progress and len(files) > 1  # a bar over several scans, with the time left
        bar = tqdm(total=len(files), desc="predict", unit="scan", dynamic_ncols=True,
                   disable=not shown)
        say = bar.write if shown else log
        with bar:
            for src, dst in zip(files, outputs):
                image, ref = read_image_xyz(src)
                image = prep.apply(image)
                pred, _ = segment_image(model, image, patch, strides, overlap, dev, use_amp,
                                        bool(nms), mode, sw_batch_size)
                write_mask_like(pred, ref, dst)
                say(f"{src} -> {dst}  ({int((pred > 0).sum())} foreground voxels of "
                    f"{pred.size})")
                bar.update(1)
    where = outputs[0] if len(outputs) == 1 else outputs[0].parent
    log(f"wrote {len(outputs)} mask(s) -> {where}")
    return outputs
