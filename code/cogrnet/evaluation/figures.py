"""One picture per case: three orthogonal slices with label and prediction contours."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def label_centre(label: np.ndarray) -> tuple[int, int, int]:
    """Voxel index ``(x, y, z)`` of the label's centre of mass (volume centre if empty)."""
    if not np.any(label):
        return tuple(s // 2 for s in label.shape)  # type: ignore[return-value]
    idx = np.argwhere(label > 0).mean(axis=0)
    return tuple(int(round(v)) for v in idx)  # type: ignore[return-value]


def save_case_png(image: np.ndarray, label: np.ndarray, pred: np.ndarray, path: str | Path,
                  title: str = "") -> Path:
    """Save the slices through the label's centre on each axis of ``(X, Y, Z)`` volumes:
    the image in grey, the label contour in green, the prediction contour in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = label_centre(label)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, ax in enumerate(axes):
        sl = [slice(None)] * 3
        sl[axis] = centre[axis]
        s = tuple(sl)
        ax.imshow(image[s].T, cmap="gray", origin="lower", interpolation="nearest")
        for vol, colour in ((label, "lime"), (pred, "red")):
            m = (vol[s] > 0).T.astype(float)
            if 0 < m.sum() < m.size:
                ax.contour(m, levels=[0.5], colors=colour, linewidths=1.0)
        names = "XYZ"
        rest = [names[i] for i in range(3) if i != axis]
        ax.set_title(f"{names[axis]} = {centre[axis]}  ({rest[0]} across, {rest[1]} up)",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}  label: green, prediction: red", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
