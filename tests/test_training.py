"""Behaviour of code/train.py on tiny phantoms: every method runs, unlabeled labels are never
read, checkpoints describe themselves, resume after kill -9 / SIGTERM is exact, NaN guard."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CODE
from cogrnet.errors import ConfigError, DataError
from cogrnet.checkpoints import load_checkpoint
from cogrnet.training.config import parse_config
from cogrnet.training.trainer import Trainer, TrainingError

TINY = ["--dataset", "phantom", "--n_filters", "4", "--patch_size", "32", "32", "16",
        "--batch_size", "4", "--labeled_bs", "2", "--device", "cpu", "--no_progress",
        "--num_workers", "1"]


def _argv(root: Path, out: Path, exp: str, *extra: str) -> list[str]:
    return ["--root_path", str(root), "--out_root", str(out), "--exp", exp, *TINY, *extra]


def _train(root, out, exp, *extra) -> Trainer:
    trainer = Trainer(parse_config(_argv(root, out, exp, *extra)))
    trainer.run()
    return trainer


@pytest.mark.parametrize("method,extra", [
    ("cogrnet", ["--label_source", "full", "--pre_max_iteration", "2", "--self_max_iteration", "2"]),
    ("bcp", ["--pre_max_iteration", "1", "--self_max_iteration", "2"]),
    ("sup", ["--label_source", "full", "--max_iteration", "2"]),
    ("mt", ["--label_source", "full", "--max_iteration", "2"]),
    ("uamt", ["--label_source", "full", "--max_iteration", "2", "--uamt_passes", "2"]),
])
def test_each_method_runs_and_writes_a_self_describing_run(phantom_root, tmp_path, method, extra,
                                                           label_reads):
    t = _train(phantom_root, tmp_path, method, "--method", method, "--labelnum", "2",
               "--val_interval", "2", *extra)
    run = tmp_path / method
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == method and cfg["patch_size"] == [32, 32, 16]
    n_iter = 4 if method == "cogrnet" else 3 if method == "bcp" else 2
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["iteration"] for r in logged if "lr" in r}) == list(range(1, n_iter + 1))
    assert any((run / "tb").iterdir())
    best = load_checkpoint(run / "best.pth")
    assert best["config"]["network"]["n_filters"] == 4
    last = load_checkpoint(run / "last.pth")
    assert last["optimizer"] is not None
    assert last["iteration"] == n_iter
    if method in ("cogrnet", "bcp"):
        assert (run / "pretrain_best.pth").exists() and last["ema"] is not None
        assert 0.6 <= last["extra"]["method_state"]["fa_ratio"] <= 0.733 or method == "bcp"
    # the labeled and validation labels are read, unlabeled ones never
    assert set(label_reads) == set(t.split.labeled) | set(t.split.val)
    assert t.split.unlabeled  # so the last line checks something
    assert not set(label_reads) & set(t.split.unlabeled)


def test_unlabeled_labels_are_never_read(phantom_root, tmp_path, label_reads):
    t = _train(phantom_root, tmp_path, "u", "--label_source", "full", "--labelnum", "1",
               "--val_list", "none", "--pre_max_iteration", "1", "--self_max_iteration", "2")
    assert t.split.unlabeled and label_reads == t.split.labeled


@pytest.mark.parametrize("extra,message", [
    (["--labelnum", "99"], "--labelnum 99"),
    (["--labeled_bs", "4"], "--labeled_bs 4"),
    (["--patch_size", "30", "32", "16"], "multiple of 16"),
    (["--max_iteration", "3"], "--max_iteration is for single-stage"),
    (["--label_source", "coarse"], "--coarse_dir is required"),
    (["--val_list", "nolist"], "no list file found"),
])
def test_bad_arguments_give_one_line_errors(phantom_root, tmp_path, extra, message):
    with pytest.raises((ConfigError, DataError)) as err:
        Trainer(parse_config(_argv(phantom_root, tmp_path, "bad", "--label_source", "full", *extra)
                             if "--label_source" not in extra else
                             _argv(phantom_root, tmp_path, "bad", *extra)))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_existing_run_is_not_overwritten_without_flag(phantom_root, tmp_path):
    args = ["--label_source", "full", "--method", "sup", "--max_iteration", "1", "--labelnum", "1"]
    _train(phantom_root, tmp_path, "x", *args)
    before = (tmp_path / "x" / "last.pth").read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        _train(phantom_root, tmp_path, "x", *args)
    assert (tmp_path / "x" / "last.pth").read_bytes() == before


def test_nonfinite_loss_stops_with_last_good_checkpoint(phantom_root, tmp_path, monkeypatch):
    from cogrnet.methods.supervised import Supervised

    real = Supervised.step

    def step(self, batch, ctx):
        out = real(self, batch, ctx)
        if ctx.iteration == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Supervised, "step", step)
    args = ["--label_source", "full", "--method", "sup", "--max_iteration", "4",
            "--labelnum", "1", "--save_interval", "1", "--val_list", "none"]
    with pytest.raises(TrainingError, match="non-finite loss at iteration 2"):
        _train(phantom_root, tmp_path, "nan", *args)
    assert load_checkpoint(tmp_path / "nan" / "last.pth")["iteration"] == 2
    t = _train(phantom_root, tmp_path, "skip", *args, "--skip_nonfinite")
    assert "step skipped" in (tmp_path / "skip" / "log.txt").read_text()
    assert load_checkpoint(t.run_dir / "last.pth")["iteration"] == 4


def _cli(root, out, exp, *extra) -> list[str]:
    return [sys.executable, str(CODE / "train.py"), *_argv(root, out, exp, *extra)]


# --fa_ratio_range wide enough that the auto Focus Area ratio is the measured foreground
# fraction, not a clamp bound: losing the pre-training outputs on resume changes the run
RESUME_ARGS = ["--label_source", "full", "--labelnum", "2", "--pre_max_iteration", "6",
               "--self_max_iteration", "14", "--save_interval", "1", "--val_interval", "4",
               "--fa_ratio_range", "0.01", "0.99"]
RESUME_TOTAL = 20
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _weights(path: Path) -> dict:
    ckpt = load_checkpoint(path)
    return {"model": ckpt["model"], "ema": ckpt["ema"], "iteration": ckpt["iteration"],
            "fa_ratio": ckpt["extra"]["method_state"]["fa_ratio"]}


def _assert_same(a: dict, b: dict) -> None:
    assert a["iteration"] == b["iteration"] and a["fa_ratio"] == b["fa_ratio"]
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists() and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.05)


def _checkpoint_iteration(path: Path) -> int:
    return load_checkpoint(path)["iteration"] if path.exists() else 0


def _wait_for_progress(path: Path, proc: subprocess.Popen, beyond: int,
                       timeout: float = 120) -> int:
    """Wait until ``proc`` has written a checkpoint past iteration ``beyond``."""
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        it = _checkpoint_iteration(path)
        if it > beyond:
            return it
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint past iteration {beyond} (exit {proc.poll()})")


def test_kill9_mid_training_then_resume_equals_uninterrupted(phantom_root, tmp_path):
    """Three kill -9, each after the process has written a new checkpoint and before the run
    ends (both asserted), one of them in pre-training, so the resumed runs must restore the
    weights, optimizer, teacher and the pre-training outputs behind the Focus Area ratio."""
    subprocess.run(_cli(phantom_root, tmp_path, "ref", *RESUME_ARGS), env=ENV, check=True,
                   capture_output=True, timeout=300)
    ref = _weights(tmp_path / "ref" / "last.pth")
    assert 0.01 < ref["fa_ratio"] < 0.99  # measured, not clamped
    rng = random.Random(0)
    args = _cli(phantom_root, tmp_path, "killed", *RESUME_ARGS)
    last = tmp_path / "killed" / "last.pth"
    reached = []
    for attempt in range(3):
        proc = subprocess.Popen(args + (["--resume"] if attempt else []), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_progress(last, proc, reached[-1] if reached else 0)
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        reached.append(_checkpoint_iteration(last))  # never corrupt: it loads
    assert reached[0] <= 6 and reached[-1] < RESUME_TOTAL, reached  # in pre-training / mid-run
    assert reached == sorted(set(reached)), reached  # each kill after new progress
    subprocess.run(args + ["--resume"], env=ENV, check=True, capture_output=True, timeout=300)
    _assert_same(ref, _weights(last))


def test_sigterm_saves_and_resume_completes(phantom_root, tmp_path):
    args = _cli(phantom_root, tmp_path, "term", *RESUME_ARGS)
    two = dict(ENV, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")  # the resume runs with 1
    proc = subprocess.Popen(args, env=two, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    last = tmp_path / "term" / "last.pth"
    _wait_for(last, proc)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:
        pytest.skip("run finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM  # 143, as a shell reports SIGTERM
    assert "Traceback" not in err
    stopped = load_checkpoint(last)["iteration"]
    assert "rerun with --resume" in (tmp_path / "term" / "log.txt").read_text()
    assert 0 < stopped < RESUME_TOTAL
    done = subprocess.run(args + ["--resume"], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(last)["iteration"] == RESUME_TOTAL
    assert f"resumed from {last} at iteration {stopped}" in (tmp_path / "term" / "log.txt").read_text()
    # every start is in environment.jsonl: the thread count of the resume is its own line
    starts = [json.loads(line) for line in
              (tmp_path / "term" / "environment.jsonl").read_text().splitlines()]
    assert [s["iteration"] for s in starts] == [0, stopped]
    assert [s["threads"] for s in starts] == [2, 1] and starts[0]["torch"] == torch.__version__
    log = (tmp_path / "term" / "log.txt").read_text()
    assert "intra-op thread(s)" in log
    assert "resumed with threads 1 (before: 2): from here the run is not bit-identical" in log


@pytest.mark.parametrize("extra", [[], ["--coarse_mode", "two_stream"], ["--confidence_weighting"]])
def test_coarse_label_modes(phantom_root, phantom_coarse, tmp_path, extra, label_reads):
    t = _train(phantom_root, tmp_path, "c", "--coarse_dir", str(phantom_coarse), "--labelnum", "2",
               "--val_list", "none", "--pre_max_iteration", "1", "--self_max_iteration", "1", *extra)
    keys = set(t.labeled[0].targets)
    assert keys == ({"label", "label_b"} if "two_stream" in extra else
                    {"label", "weight"} if extra else {"label"})
    assert label_reads == []  # coarse labels only: no full label is read in training
    if "two_stream" in extra:  # each set holds the other plane's annotated slice exactly
        from cogrnet.annotation.io import read_coarse_label

        vol = t.labeled[0]
        coarse = read_coarse_label(phantom_coarse, vol.case_id)
        (ax_a, ax_b), (i_a, i_b) = coarse.axes, coarse.indices
        np.testing.assert_array_equal(np.take(vol.targets["label"], i_b, axis=ax_b),
                                      np.take(coarse.annotation, i_b, axis=ax_b))
        np.testing.assert_array_equal(np.take(vol.targets["label_b"], i_a, axis=ax_a),
                                      np.take(coarse.annotation, i_a, axis=ax_a))
    assert load_checkpoint(tmp_path / "c" / "last.pth")["iteration"] == 2
