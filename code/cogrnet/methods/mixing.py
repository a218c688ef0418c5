"""Focus Area copy-paste mixing (BCP-style cuboid masks).

A mask ``M`` is ones with one zero cuboid whose side is ``ratio`` times the patch side on
each axis; ``mix(a, b, M) = a * M + b * (1 - M)`` pastes the cuboid of ``b`` into ``a``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def sample_cuboid(rng: np.random.Generator, patch: Sequence[int],
                  ratio: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Uniform cuboid position for side ``round(ratio * patch)`` per axis: ``(start, size)``."""
    if not 0 < ratio <= 1:
        raise ValueError(f"Focus Area ratio must be in (0, 1], got {ratio}")
    size = tuple(max(1, int(round(ratio * p))) for p in patch)
    start = tuple(int(rng.integers(0, p - s + 1)) for p, s in zip(patch, size))
    return start, size


def cuboid_mask(patch: Sequence[int], start: Sequence[int], size: Sequence[int],
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Float ``patch``-shaped mask: 1 everywhere except 0 inside the cuboid."""
    mask = torch.ones(tuple(patch), device=device)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = 0
    return mask


def mix(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``a`` outside the cuboid, ``b`` inside; ``mask`` broadcasts over leading dims."""
    return a * mask + b * (1 - mask)
