"""The trainer's recording of a step: the progress bar's loss and the ``metrics.jsonl`` row."""
from __future__ import annotations

import json

import numpy as np
import torch

from cogrnet.methods.base import Stage, StepOutput
from cogrnet.training.recording import ENVIRONMENT, METRICS, Recorder


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


def test_a_resume_on_another_cpu_says_the_run_leaves_its_path(tmp_path, caplog, monkeypatch):
    """Each start records the CPU's model and the vector instructions torch's kernels use;
    a resume where they changed warns that the run is no longer bit-identical (a seed
    reproduces only on the same kind of CPU), and a start recorded before these keys
    existed is not compared on them."""
    recorder, cpu = Recorder(tmp_path, True, image_interval=10), torch.device("cpu")
    recorder.environment(0, 1, cpu)
    first = json.loads((tmp_path / ENVIRONMENT).read_text())
    assert first["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert first["cpu"] and first["threads"] == torch.get_num_threads()
    assert first["numpy"] == np.__version__
    with caplog.at_level("INFO", logger="cogrnet.train"):
        recorder.environment(5, 1, cpu)
    assert "resumed with" not in caplog.text
    assert f"{first['cpu']}, {first['cpu_capability']} kernels" in caplog.text

    other = dict(first, cpu_capability="AVX512" if first["cpu_capability"] != "AVX512"
                 else "AVX2")
    (tmp_path / ENVIRONMENT).write_text(json.dumps(other) + "\n")
    caplog.clear()
    with caplog.at_level("INFO", logger="cogrnet.train"):
        recorder.environment(5, 1, cpu)
    assert (f"resumed with cpu_capability {first['cpu_capability']} (before: "
            f"{other['cpu_capability']}): from here the run is not bit-identical") in caplog.text

    # a CPU start resumed on a GPU: the device changed, and the CPU keys are not recorded
    gpu = {k: v for k, v in first.items() if k not in ("cpu", "cpu_capability")}
    monkeypatch.setattr("cogrnet.training.recording.environment",
                        lambda device: dict(gpu, device="cuda:0", device_name="A GPU"))
    (tmp_path / ENVIRONMENT).write_text(json.dumps(first) + "\n")
    caplog.clear()
    with caplog.at_level("INFO", logger="cogrnet.train"):
        recorder.environment(5, 1, cpu)
    assert (f"resumed with device cuda:0 (before: cpu), cpu None (before: {first['cpu']})"
            in caplog.text)
    monkeypatch.undo()

    older = {k: v for k, v in first.items() if k not in ("cpu", "cpu_capability")}
    (tmp_path / ENVIRONMENT).write_text(json.dumps(older) + "\n")
    caplog.clear()
    with caplog.at_level("INFO", logger="cogrnet.train"):
        recorder.environment(5, 1, cpu)
    assert "resumed with" not in caplog.text
