"""Synthetic phantoms shaped like LA cases: the project's embedded demo and test data.

Each case is a smooth random closed 3D shape (a few percent of the volume) brighter than its
background, with distractor blobs, Gaussian noise and a smooth multiplicative bias field,
z-scored like the UA-MT LA preprocessing. Fully deterministic from the seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..data.dataset import UAMT_DIR, UAMT_FILE, write_case_h5


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def phantom_shape(rng: np.random.Generator, shape: Sequence[int],
                  fraction: tuple[float, float] = (0.03, 0.07)) -> np.ndarray:
    """A smooth random closed blob: a deformed ellipsoid, one connected component, no holes.
    Returns a bool ``shape`` array whose foreground fraction lies roughly in ``fraction``."""
    shape = tuple(int(s) for s in shape)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    target = rng.uniform(*fraction) * np.prod(shape)
    # ellipsoid semi-axes with the target volume, random aspect
    aspect = rng.uniform(0.75, 1.3, size=3)
    scale = (target / (4.0 / 3.0 * np.pi * np.prod(aspect))) ** (1.0 / 3.0)
    radii = aspect * scale
    centre = [rng.uniform(0.35, 0.65) * s for s in shape]
    dist = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)))
    wobble = 0.18 * _smooth_field(rng, shape, sigma=max(shape) / 8)
    mask = dist + wobble < 1.0
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(mask)


def make_phantom_case(rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image float32, label uint8)`` pair of ``shape``."""
    label = phantom_shape(rng, shape)
    image = 0.25 + 0.1 * _smooth_field(rng, shape, sigma=3)
    image[label] = 1.0 + 0.08 * _smooth_field(rng, shape, sigma=2)[label]
    # distractors: a few bright blobs away from the target, dimmer than it
    for _ in range(int(rng.integers(2, 5))):
        c = [rng.uniform(0.1, 0.9) * s for s in shape]
        r = rng.uniform(0.04, 0.09) * min(shape)
        g = np.ogrid[tuple(slice(0, s) for s in shape)]
        blob = sum((gi - ci) ** 2 for gi, ci in zip(g, c)) < r ** 2
        blob &= ~ndimage.binary_dilation(label, iterations=2)
        image[blob] = rng.uniform(0.55, 0.75)
    image = ndimage.gaussian_filter(image, 0.7)
    bias = np.exp(0.15 * _smooth_field(rng, shape, sigma=max(shape) / 3))
    image = image * bias + rng.normal(0.0, 0.08, size=shape)
    image = (image - image.mean()) / (image.std() + 1e-8)
    return image.astype(np.float32), label.astype(np.uint8)


def make_phantom_set(out_root: str | Path, n_train: int = 16, n_test: int = 4,
                     base_shape: Sequence[int] = (72, 64, 40), jitter: int = 8,
                     seed: int = 0, layout: str = "uamt") -> list[str]:
    """Write ``n_train + n_test`` phantom cases under ``out_root`` with ``train.list`` and
    ``test.list``. Case shapes vary by up to ``jitter`` voxels in-plane around ``base_shape``.
    ``layout``: ``uamt`` (``<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5``) or ``flat``.
    Returns all case IDs, train first."""
    if layout not in ("uamt", "flat"):
        raise ValueError(f"layout must be 'uamt' or 'flat', got {layout!r}")
    out_root = Path(out_root)
    rng = np.random.default_rng(seed)
    ids = [f"phantom_{i:03d}" for i in range(n_train + n_test)]
    for case_id in ids:
        shape = [int(s + rng.integers(0, jitter + 1)) if k < 2 else int(s)
                 for k, s in enumerate(base_shape)]
        image, label = make_phantom_case(rng, shape)
        path = (out_root / UAMT_DIR / case_id / UAMT_FILE if layout == "uamt"
                else out_root / f"{case_id}.h5")
        write_case_h5(path, image, label)
    (out_root / "train.list").write_text("\n".join(ids[:n_train]) + "\n")
    (out_root / "test.list").write_text("\n".join(ids[n_train:]) + "\n")
    return ids


#: the grid of :func:`make_nifti_set`'s scans: anisotropic voxels (mm along i, j, k) and a
#: direction that is not the identity (i runs along -y, j along x), as scanners write them
NIFTI_SPACING = (0.8, 0.7, 2.0)
NIFTI_ORIGIN = (-12.5, 30.0, 4.0)
NIFTI_DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def make_nifti_set(out_dir: str | Path, n_train: int = 8, n_annotated: int = 3,
                   n_dense: int = 1, n_test: int = 2, base_shape: Sequence[int] = (56, 48, 24),
                   jitter: int = 4, seed: int = 0) -> list[str]:
    """Phantom scans as a user brings them: ``imagesTr/<ID>_0000.nii.gz`` (nnU-Net names),
    ``annotationsTr/<ID>.nii.gz`` for the first ``n_annotated`` (two painted slices, value 1,
    on the scan's grid), ``labelsTr/<ID>.nii.gz`` (dense) for the next ``n_dense``, and
    ``imagesTs``/``labelsTs`` for ``n_test`` more; all on the :data:`NIFTI_SPACING` /
    :data:`NIFTI_ORIGIN` / :data:`NIFTI_DIRECTION` grid. Returns the case IDs, train first."""
    from ..annotation.dpa import simulate_dpa
    from ..data.image_io import Geometry
    from ..data.nifti import write_volume_xyz

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    grid = Geometry(NIFTI_SPACING, NIFTI_ORIGIN, NIFTI_DIRECTION)
    ids = [f"scan{i:02d}" for i in range(n_train + n_test)]
    for k, case_id in enumerate(ids):
        shape = [int(s + rng.integers(0, jitter + 1)) if a < 2 else int(s)
                 for a, s in enumerate(base_shape)]
        image, label = make_phantom_case(rng, shape)
        image = 200.0 + 100.0 * image  # scanner-like units, not z-scored
        test = k >= n_train
        write_volume_xyz(image.astype(np.float32),
                         out / ("imagesTs" if test else "imagesTr") / f"{case_id}_0000.nii.gz",
                         grid)
        if test:
            write_volume_xyz(label, out / "labelsTs" / f"{case_id}.nii.gz", grid)
        elif k < n_annotated:
            dpa = simulate_dpa(label, (2, 1), "largest", case_id)
            write_volume_xyz(dpa.sparse, out / "annotationsTr" / f"{case_id}.nii.gz", grid)
        elif k < n_annotated + n_dense:
            write_volume_xyz(label, out / "labelsTr" / f"{case_id}.nii.gz", grid)
    return ids
