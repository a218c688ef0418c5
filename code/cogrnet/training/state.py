"""The state of a training run that its steps change and ``last.pth`` keeps: :class:`RunState`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def _fresh_method_state() -> dict[str, Any]:
    return {"best": {}}


@dataclass
class RunState:
    """Everything of a run that lives from step to step, passed as one object.

    ``method_state`` is the method's own state, saved in checkpoints (e.g. the Focus Area
    ratio); its ``"best"`` maps a stage name to that stage's best validation Dice so far.
    ``iteration`` counts the optimizer steps of all stages done so far (a resumed run starts
    from its checkpoint's); ``resumed_stage`` names the stage of the checkpoint the run was
    resumed from (``None`` when it started from scratch)."""

    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # loss scaling of float16 autocast on CUDA (else a no-op)
    autocast: Callable[[], Any]  # a fresh autocast context for the step's forward passes
    teacher: torch.nn.Module | None = None  # the EMA teacher of a teacher stage
    method_state: dict[str, Any] = field(default_factory=_fresh_method_state)
    iteration: int = 0
    resumed_stage: str | None = None
