"""Label maps on their scan's grid, 3D Slicer segmentations (``.seg.nrrd``) included.

3D Slicer saves a segmentation as a NRRD label map cropped to the extent of its segments:
its size and origin differ from the scan's (``Segmentation_ReferenceImageExtentOffset``
records where the crop starts, in voxels). Each segment ``N`` is described by header fields
``SegmentN_Name``, ``SegmentN_LabelValue`` (its voxel value) and ``SegmentN_Layer`` (which
3D volume of the file holds it: overlapping segments are saved on separate layers, a 4D
file that SimpleITK reads as one value per layer and voxel); SimpleITK reads these fields
as the image's metadata.

:func:`read_label_map` reads any label map (NIfTI, NRRD, MHA) and returns its voxels on the
scan's grid, with the target value chosen by ``--label_value`` or, in a Slicer file, by the
segment's name (``--segment``). A plain map must lie on the scan's grid already. A Slicer
segmentation is padded back onto it by its physical origin when it has the scan's spacing
and direction, its origin falls on a voxel of the scan and the crop lies inside the scan;
any other grid is a one-line :class:`DataError` naming the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .image_io import Geometry, image_array, read_image, require_same_grid

_SEGMENT_KEY = re.compile(r"^Segment(?P<n>\d+)_(?P<field>\w+)$")
#: how far (in voxels) a cropped segmentation's origin may lie from a voxel of the scan
ORIGIN_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Segment:
    """One named segment of a 3D Slicer segmentation: its voxels hold ``value`` in layer
    ``layer`` of the file."""

    name: str
    value: int
    layer: int


@dataclass(frozen=True)
class LabelMap:
    """A label map on its scan's grid. ``volume``: integer ``(X, Y, Z)`` of the scan's size
    (the chosen layer of a layered file); ``segments``: the named segments of a Slicer
    file (empty for other files); ``label_value``: the target's voxel value (from
    ``--label_value`` or the chosen segment; ``None``: the map's one non-zero value)."""

    volume: np.ndarray
    segments: tuple[Segment, ...] = ()
    label_value: int | None = None

    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.segments]


def check_target(label_value: int | None, segment: str | None) -> None:
    """A :class:`ConfigError` when both ``--label_value`` and ``--segment`` are given."""
    if label_value is not None and segment is not None:
        raise ConfigError(f"--segment {segment} and --label_value {label_value}: choose the "
                          "target with one of them")


def is_slicer_segmentation(img: Any) -> bool:
    """Whether the sitk image carries 3D Slicer's segmentation header fields."""
    return any(k.startswith("Segmentation_") or _SEGMENT_KEY.match(k)
               for k in img.GetMetaDataKeys())


def read_segments(img: Any, what: str) -> tuple[Segment, ...]:
    """The segments named in a Slicer segmentation's header, in their order ``N``. A segment
    without ``LabelValue`` (files of Slicer before 4.11: one layer per segment) has value 1
    on layer ``N`` of a layered file, layer 0 otherwise."""
    fields: dict[int, dict[str, str]] = {}
    for key in img.GetMetaDataKeys():
        m = _SEGMENT_KEY.match(key)
        if m:
            fields.setdefault(int(m.group("n")), {})[m.group("field")] = img.GetMetaData(key)
    layered = img.GetNumberOfComponentsPerPixel() > 1
    out = []
    for n in sorted(fields):
        f = fields[n]
        try:
            value = int(f.get("LabelValue", "1").strip())
            layer = int(f.get("Layer", str(n if layered else 0)).strip())
        except ValueError:
            raise DataError(f"{what}: Segment{n}_LabelValue/Segment{n}_Layer is not an "
                            f"integer ({f.get('LabelValue')!r}, {f.get('Layer')!r})") from None
        out.append(Segment(f.get("Name", f.get("ID", f"Segment{n}")).strip(), value, layer))
    return tuple(out)


def _listing(segments: Sequence[Segment]) -> str:
    return ", ".join(f"'{s.name}' = {s.value}" for s in segments) or "none"


def choose_segment(segments: Sequence[Segment], n_layers: int, label_value: int | None,
                   segment: str | None, what: str) -> Segment | None:
    """The target segment of a Slicer file: the one named ``segment``, the one holding
    ``label_value`` when the file has layers, the only segment when there is one; ``None``
    when ``label_value`` alone picks it (one layer). One-line :class:`DataError` when the
    name is unknown or the choice is ambiguous."""
    if segment is not None:
        found = [s for s in segments if s.name == segment]
        if not found:
            raise DataError(f"{what}: no segment named '{segment}' (segments: "
                            f"{_listing(segments)})")
        return found[0]
    if label_value is not None:
        if n_layers == 1:
            return None
        found = [s for s in segments if s.value == label_value]
        if len(found) != 1:
            problem = "no segment has" if not found else "several layers hold"
            raise DataError(f"{what}: {problem} --label_value {label_value} (segments: "
                            f"{_listing(segments)}); choose the target with --segment NAME")
        return found[0]
    if len(segments) == 1:
        return segments[0]
    raise DataError(f"{what}: {len(segments)} segments ({_listing(segments)}); choose the "
                    "target with --segment NAME")


def crop_offset(img: Any, size: Sequence[int], geometry: Geometry | None, what: str,
                kind: str) -> tuple[int, int, int]:
    """Where the cropped Slicer label map ``img`` starts in the scan (voxels along i, j, k):
    the scan (``size``, ``geometry``) and the map must share spacing and direction, the
    map's origin must fall on a scan voxel and its extent lie inside the scan; otherwise a
    one-line :class:`DataError` naming ``what``."""
    got = tuple(int(s) for s in img.GetSize())
    size = tuple(int(s) for s in size)
    if geometry is None or geometry.origin is None or geometry.direction is None:
        require_same_grid(img, geometry, what, kind, "image", size)
        return (0, 0, 0)
    require_same_grid(img, Geometry(geometry.spacing, None, geometry.direction), what, kind,
                      "image")
    axes = np.asarray(geometry.direction, np.float64).reshape(3, 3) * np.asarray(
        geometry.spacing, np.float64)  # column k: the physical step of index axis k
    shift = np.linalg.solve(axes, np.asarray(img.GetOrigin(), np.float64)
                            - np.asarray(geometry.origin, np.float64))
    offset = np.round(shift)
    if np.abs(shift - offset).max() > ORIGIN_TOLERANCE:
        raise DataError(f"{what}: {kind} origin lies between the image's voxels (at voxel "
                        f"({', '.join(f'{v:.3f}' for v in shift)}) of the image)")
    lo = tuple(int(v) for v in offset)
    hi = tuple(a + n for a, n in zip(lo, got))
    if min(lo) < 0 or any(h > n for h, n in zip(hi, size)):
        raise DataError(f"{what}: {kind} extent (voxels {lo} to {tuple(h - 1 for h in hi)}) "
                        f"lies outside the image's size {size}")
    return lo  # type: ignore[return-value]


def read_label_map(path: str | Path, what: str, kind: str, size: Sequence[int],
                   geometry: Geometry | None = None, label_value: int | None = None,
                   segment: str | None = None) -> LabelMap:
    """Read the label map ``path`` onto its scan's grid (``size``: the scan's ``(X, Y, Z)``,
    ``geometry``: its grid when known); see the module doc. ``what`` names the file in
    errors (e.g. ``"<path> (case 'ID')"``), ``kind`` the map (``annotation``, ``label``).
    ``segment`` (a Slicer segment's name) or ``label_value`` chooses the target; with
    ``segment``, a file without named segments is an error."""
    check_target(label_value, segment)
    img = read_image(path, kind, components=True)
    slicer = is_slicer_segmentation(img)
    layers = img.GetNumberOfComponentsPerPixel()
    if not slicer:
        if segment is not None:
            raise DataError(f"{what}: --segment '{segment}': the file names no segments (not "
                            "a 3D Slicer .seg.nrrd); choose the target with --label_value")
        if layers != 1:
            raise DataError(f"{what}: {kind} must hold one value per voxel, got {layers} "
                            "(vector image)")
        require_same_grid(img, geometry, what, kind, "image", tuple(size))
        volume = np.transpose(image_array(img, path), (2, 1, 0))
        return LabelMap(np.ascontiguousarray(volume), (), label_value)
    segments = read_segments(img, what)
    chosen = choose_segment(segments, layers, label_value, segment, what)
    layer = chosen.layer if chosen is not None else 0
    if not 0 <= layer < layers:
        raise DataError(f"{what}: segment '{chosen.name}' is on layer {layer}, the file "  # type: ignore[union-attr]
                        f"holds {layers}")
    lo = crop_offset(img, size, geometry, what, kind)
    data = image_array(img, path)
    crop = np.transpose(data[..., layer] if layers > 1 else data, (2, 1, 0))
    if chosen is not None and not (crop == chosen.value).any():
        raise DataError(f"{what}: segment '{chosen.name}' (value {chosen.value}) is empty")
    volume = np.zeros(tuple(int(s) for s in size), dtype=crop.dtype)
    volume[tuple(slice(a, a + n) for a, n in zip(lo, crop.shape))] = crop
    return LabelMap(volume, segments, chosen.value if chosen is not None else label_value)
