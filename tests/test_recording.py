"""The trainer's recording of a step: the progress bar's loss and the ``metrics.jsonl`` row."""
from __future__ import annotations

import json

import torch

from cogrnet.methods.base import Stage, StepOutput
from cogrnet.training.recording import METRICS, Recorder


class _Bar:
    """A stand-in progress bar that keeps what it was told."""

    def __init__(self) -> None:
        self.steps, self.postfix = 0, {}

    def update(self, n: int) -> None:
        self.steps += n

    def set_postfix(self, **values: str) -> None:
        self.postfix = values


def test_the_bar_shows_the_first_scalar_even_when_it_is_zero(tmp_path):
    """A first logged scalar of exactly 0.0 is the loss shown (not the step's total loss);
    without scalars, the total loss."""
    recorder, bar = Recorder(tmp_path, True, image_interval=10), _Bar()
    stage = Stage("train", 2, False, False)
    recorder.step(1, stage, 0.01, StepOutput(torch.tensor(0.75), {"loss/sup": 0.0}), bar)
    assert bar.postfix == {"loss": "0.0000", "lr": "0.01"}
    recorder.step(2, stage, 0.01, StepOutput(torch.tensor(0.75)), bar)
    assert bar.postfix["loss"] == "0.7500" and bar.steps == 2
    rows = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert rows == [{"iteration": 1, "stage": "train", "lr": 0.01, "loss/sup": 0.0},
                    {"iteration": 2, "stage": "train", "lr": 0.01}]
