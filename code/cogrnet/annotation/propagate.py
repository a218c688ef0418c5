"""Slice-chain registration of one annotated plane ("spatial mapping").

Starting from the annotated slice ``i0`` of a stack (the slices along one axis), walk outward
in both directions. For each neighbour slice ``i`` of an already labeled slice ``j``: crop both
slices to the bounding box of the mask of ``j`` plus a margin, register image slice ``j``
(moving) onto image slice ``i`` (fixed) with SimpleITK's fast symmetric forces demons, warp
the mask of ``j`` with nearest neighbour, clean it (one opening and one closing with a square
structuring element), correct it with the crossing line of the other plane when one is given,
and use it as the mask of ``i``. A walk stops when the mask becomes empty, or when the other
plane says the object ends there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..errors import ConfigError


DEMONS_FILTERS = {
    "fast_symmetric": "FastSymmetricForcesDemonsRegistrationFilter",
    "symmetric": "SymmetricForcesDemonsRegistrationFilter",
    "diffeomorphic": "DiffeomorphicDemonsRegistrationFilter",
    "classic": "DemonsRegistrationFilter",
}


@dataclass(frozen=True)
class PropagationParams:
    """Settings of the slice chain."""

    margin: int = 12  # pixels added around the mask's bounding box before registering
    iterations: int = 40  # demons iterations
    sigma: float = 1.0  # demons field smoothing (pixels of the grid after ``shrink``)
    presmooth: float = 1.0  # Gaussian sigma applied to the image slices before registering
    kernel: int = 5  # side of the square opening/closing element (0 or 1 = no cleaning)
    threads: int = 1  # SimpleITK threads per registration (1 keeps results bit-identical)
    grace: int = 3  # slices a walk may go beyond the other plane's last foreground line
    rescale: bool = True  # correct each slice's extent along the crossing line (``_apply_cross``)
    shrink: int = 2  # register at 1/shrink resolution (the field is upsampled to warp the mask)
    linear: bool = False  # warp masks bilinearly (threshold 0.5) instead of nearest neighbour
    demons: str = "fast_symmetric"  # SimpleITK demons variant (DEMONS_FILTERS)
    levels: int = 1  # pyramid levels: >1 registers at 2**(levels-1) coarser first, then finer
    match_histogram: bool = False  # match the moving slice's histogram to the fixed one first

    def __post_init__(self) -> None:
        """A one-line :class:`ConfigError` for settings the chain cannot run with."""
        if self.demons not in DEMONS_FILTERS:
            raise ConfigError(f"propagation demons '{self.demons}': expected one of "
                              f"{', '.join(DEMONS_FILTERS)}")
        if self.levels < 1 or self.shrink < 1:
            raise ConfigError("propagation levels and shrink must be >= 1 (got "
                              f"{self.levels}, {self.shrink})")
        if min(self.iterations, self.sigma, self.presmooth, self.margin, self.grace,
               self.kernel) < 0:
            raise ConfigError("propagation iterations, sigma, presmooth, margin, grace and "
                              "kernel must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CrossLine:
    """The other plane's annotation seen from this stack.

    In stack coordinates (slice index first, then the 2D slice axes ``(u, v)``), the other
    annotated slice is the line ``u == pos`` (``line_axis == 0``) or ``v == pos``
    (``line_axis == 1``) of every slice ``i``; ``truth[i]`` is the true mask along that line
    (shape ``(n_slices, line_length)``)."""

    line_axis: int
    pos: int
    truth: np.ndarray


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box of a non-empty 2D mask grown by ``margin``, clipped to the slice."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)))


def parse_propagation(items: Sequence[str],
                      base: PropagationParams | None = None) -> PropagationParams:
    """``["demons=diffeomorphic", "levels=2"]`` -> :class:`PropagationParams` (checked by
    its constructor); a one-line :class:`ConfigError` naming the item for an unknown name or
    a value of the wrong type."""
    types = {f.name: f.type for f in fields(PropagationParams) if f.name != "threads"}
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if name not in types or not sep or not value:
            raise ConfigError(f"--propagation {item}: expected NAME=VALUE with NAME one of "
                              f"{', '.join(types)}")
        kind = types[name]
        try:
            if kind == "bool":
                if value.lower() not in ("0", "1", "true", "false"):
                    raise ValueError(value)
                changes[name] = value.lower() in ("1", "true")
            else:
                changes[name] = {"int": int, "float": float, "str": str}[kind](value)
        except ValueError:
            words = {"int": "an integer", "float": "a number", "bool": "0, 1, true or false"}
            raise ConfigError(f"--propagation {item}: {name} must be {words[kind]}") from None
    return replace(base or PropagationParams(), **changes)


def _demons_field(fixed: np.ndarray, moving: np.ndarray, params: PropagationParams,
                  init: np.ndarray | None) -> np.ndarray:
    """One demons run on 2D float32 arrays; returns the SimpleITK field as ``(h, w, 2)``
    (x = column, y = row components), started from ``init`` (same layout) when given."""
    import SimpleITK as sitk

    f_img = sitk.GetImageFromArray(np.ascontiguousarray(fixed, dtype=np.float32))
    m_img = sitk.GetImageFromArray(np.ascontiguousarray(moving, dtype=np.float32))
    if params.match_histogram:
        m_img = sitk.HistogramMatching(m_img, f_img, 64, 7, True)
    demons = getattr(sitk, DEMONS_FILTERS[params.demons])()
    demons.SetNumberOfIterations(params.iterations)
    demons.SetStandardDeviations(params.sigma)
    demons.SetSmoothDisplacementField(True)
    demons.SetNumberOfThreads(params.threads)
    if init is None:
        field = demons.Execute(f_img, m_img)
    else:
        start = sitk.GetImageFromArray(init.astype(np.float64), isVector=True)
        field = demons.Execute(f_img, m_img, start)
    return sitk.GetArrayFromImage(field)


def _resize_field(disp: np.ndarray, shape: tuple[int, int], factor: float) -> np.ndarray:
    """Sample a ``(2, h, w)`` field on a grid ``factor`` times finer, ``shape`` points, and
    scale the displacements by ``factor``."""
    grid = np.meshgrid(np.arange(shape[0]) / factor, np.arange(shape[1]) / factor,
                       indexing="ij")
    return np.stack([ndimage.map_coordinates(d, grid, order=1, mode="nearest") * factor
                     for d in disp])


def register_pair(fixed: np.ndarray, moving: np.ndarray, params: PropagationParams) -> np.ndarray:
    """Demons registration of 2D ``moving`` onto ``fixed`` (both ``(H, W)`` float32).

    Returns the displacement field ``(2, H, W)`` in array axes: ``moving`` sampled at
    ``(r + d[0], c + d[1])`` matches ``fixed`` at ``(r, c)``."""
    k = max(1, int(params.shrink))
    shape = fixed.shape
    disp = None  # (2, h, w) in array axes, on the previous (coarser) level's grid
    for level in range(params.levels - 1, -1, -1):  # one level: register at 1/shrink
        step = k * 2 ** level
        f, m = fixed[::step, ::step], moving[::step, ::step]
        init = None
        if disp is not None:
            up = _resize_field(disp, f.shape, 2.0)
            init = np.stack([up[1], up[0]], axis=-1)
        out = _demons_field(f, m, params, init)
        disp = np.stack([out[..., 1], out[..., 0]]).astype(np.float64)
    return _resize_field(disp, shape, k) if k > 1 else disp


def warp_mask(mask: np.ndarray, disp: np.ndarray, linear: bool = False) -> np.ndarray:
    """Warp a 2D bool ``mask`` ``(H, W)`` by ``disp`` ``(2, H, W)``: nearest neighbour, or
    with ``linear`` bilinear interpolation of the mask thresholded at 0.5."""
    h, w = mask.shape
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.stack([rr + disp[0], cc + disp[1]])
    if linear:
        soft = ndimage.map_coordinates(mask.astype(np.float32), coords, order=1,
                                       mode="constant", cval=0.0)
        return soft >= 0.5
    return ndimage.map_coordinates(mask.astype(np.uint8), coords, order=0, mode="constant",
                                   cval=0).astype(bool)


def clean_mask(mask: np.ndarray, kernel: int) -> np.ndarray:
    """One binary opening then one closing with a ``kernel x kernel`` square (2D bool)."""
    if kernel <= 1:
        return mask
    st = np.ones((kernel, kernel), dtype=bool)
    # pad so that the closing does not treat the slice border as background
    pad = kernel
    m = np.pad(mask, pad)
    m = ndimage.binary_opening(m, st)
    m = ndimage.binary_closing(m, st)
    return m[pad:-pad, pad:-pad]


def _extent(line: np.ndarray) -> tuple[int, int] | None:
    idx = np.flatnonzero(line)
    return (int(idx[0]), int(idx[-1])) if idx.size else None


def _apply_cross(mask: np.ndarray, cross: CrossLine, i: int, rescale: bool) -> np.ndarray:
    """Correct slice ``i``'s mask ``(H, W)`` with the other plane's truth on its crossing line.

    With ``rescale``, the mask is first resampled along the line direction (nearest
    neighbour) so that its extent on the line ``[a', b']`` maps onto the true extent
    ``[a, b]`` (a shift and a scale of the whole slice along that direction); then the line
    itself is set to the truth."""
    truth = cross.truth[i].astype(bool)
    m = mask if cross.line_axis == 1 else mask.T  # line is the column m[:, pos]
    m = m.copy()
    want, have = _extent(truth), _extent(m[:, cross.pos])
    if rescale and want is not None and have is not None and want != have:
        scale = (have[1] - have[0] + 1) / (want[1] - want[0] + 1)
        c_want, c_have = (want[0] + want[1]) / 2.0, (have[0] + have[1]) / 2.0
        rows = np.arange(m.shape[0])
        src = np.rint(c_have + (rows - c_want) * scale).astype(np.int64)
        ok = (src >= 0) & (src < m.shape[0])
        res = np.zeros_like(m)
        res[ok] = m[src[ok]]
        m = res
    m[:, cross.pos] = truth
    return m if cross.line_axis == 1 else m.T


def _walk_limits(cross: CrossLine | None, n: int, index: int, grace: int) -> tuple[int, int]:
    """Last slice each walk (down, up) may label: ``grace`` slices past the other plane's
    foreground extent along the line, or the stack ends without a crossing plane."""
    if cross is None:
        return 0, n - 1
    rows = np.flatnonzero(cross.truth.any(axis=1))
    if rows.size == 0:
        return 0, n - 1
    lo = max(0, min(int(rows[0]), index) - grace)
    hi = min(n - 1, max(int(rows[-1]), index) + grace)
    return lo, hi


def propagate_plane(image: np.ndarray, seed: np.ndarray, index: int,
                    params: PropagationParams | None = None,
                    cross: CrossLine | None = None) -> np.ndarray:
    """Propagate one annotated slice through its stack.

    ``image``: float ``(N, H, W)``, the stack with the annotated axis first; ``seed``: bool
    ``(H, W)`` mask of slice ``index``. Returns a bool ``(N, H, W)`` label whose slice
    ``index`` equals ``seed`` exactly."""
    params = params or PropagationParams()
    n = image.shape[0]
    stack = image.astype(np.float32, copy=False)
    if params.presmooth > 0:
        stack = ndimage.gaussian_filter(stack, sigma=(0, params.presmooth, params.presmooth))
        stack = stack.astype(np.float32, copy=False)
    out = np.zeros(image.shape, dtype=bool)
    out[index] = seed
    limits = _walk_limits(cross, n, index, params.grace)
    for step, stop in zip((-1, 1), limits):
        j = index
        while 0 <= j + step < n and (j + step) * step <= stop * step:
            i = j + step
            prev = out[j]
            if not prev.any():
                break
            box = _bbox(prev, params.margin)
            disp = register_pair(stack[i][box], stack[j][box], params)
            warped = warp_mask(prev[box], disp, params.linear)
            mask = np.zeros_like(prev)
            mask[box] = clean_mask(warped, params.kernel)
            if cross is not None:
                mask = _apply_cross(mask, cross, i, params.rescale)
            out[i] = mask
            j = i
    return out


def cross_line(dpa_sparse: np.ndarray, axes: tuple[int, int], indices: tuple[int, int],
               plane: int) -> CrossLine:
    """The other plane's annotation as a :class:`CrossLine` in the stack of ``plane``
    (0 = A, 1 = B) of a sparse DPA volume ``(X, Y, Z)``."""
    ax, aq = axes[plane], axes[1 - plane]
    other = np.take(dpa_sparse, indices[1 - plane], axis=aq).astype(bool)
    ax_in_other = ax - (1 if ax > aq else 0)
    aq_in_slice = aq - (1 if aq > ax else 0)
    truth = np.moveaxis(other, ax_in_other, 0)
    return CrossLine(line_axis=aq_in_slice, pos=int(indices[1 - plane]), truth=truth)


def propagate_dpa(image: np.ndarray, dpa_sparse: np.ndarray, axes: tuple[int, int],
                  indices: tuple[int, int], params: PropagationParams | None = None,
                  use_cross: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Propagate both planes of a DPA through an ``(X, Y, Z)`` image.

    Returns the bool labels ``(label_a, label_b)``, each ``(X, Y, Z)``; with ``use_cross``
    each plane is corrected/stopped by the other plane's annotation."""
    out = []
    for plane in (0, 1):
        ax, i0 = axes[plane], indices[plane]
        seed = np.take(dpa_sparse, i0, axis=ax).astype(bool)
        cross = cross_line(dpa_sparse, axes, indices, plane) if use_cross else None
        lab = propagate_plane(np.moveaxis(image, ax, 0), seed, i0, params, cross)
        out.append(np.moveaxis(lab, 0, ax))
    return out[0], out[1]
