"""Ramp-up schedules used by consistency-based methods."""
from __future__ import annotations

import math


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` for ``t = current / length`` clipped to [0, 1] (Laine & Aila)."""
    if length <= 0:
        return 1.0
    t = min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))
