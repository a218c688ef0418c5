"""Figures (matplotlib, Agg backend): slice pictures of ``(X, Y, Z)`` volumes with contours,
the pieces of the registration stage's and the test stage's per-case PNGs, and the figure
and saving helpers the benchmark tables' plots share."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

AXIS_NAMES = "XYZ"


def label_centre(label: np.ndarray) -> tuple[int, int, int]:
    """Voxel index ``(x, y, z)`` of the label's centre of mass (volume centre if empty)."""
    if not np.any(label):
        return tuple(s // 2 for s in label.shape)  # type: ignore[return-value]
    idx = np.argwhere(label > 0).mean(axis=0)
    return tuple(int(round(v)) for v in idx)  # type: ignore[return-value]


def figure(n_panels: int, panel_size: tuple[float, float] = (4.0, 4.4)) -> tuple[Any, Any]:
    """A matplotlib figure (Agg backend) with ``n_panels`` side by side, each ``panel_size``
    inches (width, height); the axes as an array, one ``Axes`` when ``n_panels`` is 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(panel_size[0] * n_panels, panel_size[1]))
    return fig, axes


def draw_slice(ax: Any, image: np.ndarray, axis: int, index: int,
               contours: Sequence[tuple[np.ndarray, str]], note: str = "",
               spacing: Sequence[float] | None = None) -> None:
    """Slice ``index`` along ``axis`` of an ``(X, Y, Z)`` ``image`` in grey on ``ax``, with
    the outline of each ``(volume, colour)`` of ``contours`` on that slice; ``spacing`` (mm
    along X, Y, Z) draws voxels at their true aspect."""
    sl = [slice(None)] * 3
    sl[axis] = index
    s = tuple(sl)
    across, up = (i for i in range(3) if i != axis)
    aspect = float(spacing[up]) / float(spacing[across]) if spacing is not None else 1.0
    ax.imshow(image[s].T, cmap="gray", origin="lower", interpolation="nearest", aspect=aspect)
    for vol, colour in contours:
        m = (vol[s] > 0).T.astype(float)
        if 0 < m.sum() < m.size:
            ax.contour(m, levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_title(f"{AXIS_NAMES[axis]} = {index}  ({AXIS_NAMES[across]} across, "
                 f"{AXIS_NAMES[up]} up){note}",
                 fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig: Any, path: str | Path, title: str, dpi: int = 90) -> Path:
    """Give ``fig`` its title, write it to ``path`` (folders made) and close it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
