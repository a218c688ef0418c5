"""The Mean Teacher: an exponential moving average of the student."""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` (no gradients)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """``t = a * t + (1 - a) * s`` with ``a = min(1 - 1/(step + 1), decay)`` (a fast start),
    for parameters and floating-point buffers (BatchNorm running statistics)."""
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(alpha).add_(s, alpha=1 - alpha)
        else:
            t.copy_(s)
