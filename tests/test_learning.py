"""Training learns: each method, on tiny phantoms, reaches a validation Dice that a broken
loss (sign flip, swapped targets), a dead optimizer step or a collapsing learning rate would
miss; the learning-rate schedule, read back from ``metrics.jsonl``, is the stated one.

Measured when these tests were written (validation every 4 or 3 iterations, 12 in all):
sup 0.825, mt 0.826 and cogrnet 0.837 on the two validation phantoms; sup with
``--base_lr 0`` stayed at 0.17-0.23 (uamt and bcp only checked against the threshold)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cogrnet.errors import ConfigError

from cogrnet.training.config import parse_config
from cogrnet.training.trainer import Trainer

TINY = ["--dataset", "phantom", "--n_filters", "4", "--patch_size", "32", "32", "16",
        "--device", "cpu", "--no_progress", "--num_workers", "1", "--label_source", "full",
        "--labelnum", "2", "--batch_size", "4", "--labeled_bs", "2"]
LEARNED = 0.6  # validation Dice after the runs below; an untrained network scores about 0.2


@pytest.fixture(scope="module")
def phantoms8(tmp_path_factory) -> Path:
    """Eight small phantoms; the last two are the validation list."""
    from cogrnet.prepare.phantom import make_phantom_set

    root = tmp_path_factory.mktemp("phantom8")
    ids = make_phantom_set(root, n_train=8, n_test=0, base_shape=(40, 36, 24), jitter=4, seed=0)
    (root / "val.list").write_text("\n".join(ids[-2:]) + "\n")
    return root


def _run(root: Path, out: Path, exp: str, *extra: str) -> list[dict]:
    Trainer(parse_config(["--root_path", str(root), "--out_root", str(out), "--exp", exp,
                          *TINY, *extra])).run()
    return [json.loads(line) for line in (out / exp / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method,extra", [
    ("sup", ["--max_iteration", "12", "--batch_size", "2"]),
    ("mt", ["--max_iteration", "12"]),
    ("uamt", ["--max_iteration", "12", "--uamt_passes", "2"]),
    ("cogrnet", ["--pre_max_iteration", "6", "--self_max_iteration", "6"]),
    ("bcp", ["--pre_max_iteration", "6", "--self_max_iteration", "6"]),
])
def test_each_method_learns(phantoms8, tmp_path, method, extra):
    rows = _run(phantoms8, tmp_path, method, "--method", method, "--val_interval", "6", *extra)
    val = [r for r in rows if "val/dice" in r]
    assert val[-1]["iteration"] == 12
    assert val[-1]["val/dice"] > LEARNED, [r["val/dice"] for r in val]
    assert set(val[-1]["val/case_dice"]) == set((phantoms8 / "val.list").read_text().split())
    if method != "sup":  # the teacher is validated too, and has learned from the student
        assert val[-1]["val/teacher_dice"] > 0.4, [r["val/teacher_dice"] for r in val]
        fg = val[-1]["train/unlabeled_fg"]
        assert 0 < len(fg) <= 4 and all(0 <= v <= 1 for v in fg.values())
        assert val[-1]["train/unlabeled_empty"] == sum(v < 1e-4 for v in fg.values())


def test_an_untrained_network_stays_below_the_learning_threshold(phantoms8, tmp_path):
    """The threshold above is meaningful: the same run with a dead optimizer fails it."""
    rows = _run(phantoms8, tmp_path, "dead", "--method", "sup", "--max_iteration", "12",
                "--batch_size", "2", "--val_interval", "12", "--base_lr", "0")
    assert rows[-1]["val/dice"] < LEARNED - 0.2


def _lrs(rows: list[dict]) -> dict[tuple[str, int], float]:
    return {(r["stage"], r["iteration"]): r["lr"] for r in rows if "lr" in r}


def test_lr_schedule_per_stage(phantoms8, tmp_path):
    """``lr = base_lr * gamma ** (i // lr_step)`` with ``i`` counted within each stage: the
    self-training stage starts again at ``base_lr``."""
    rows = _run(phantoms8, tmp_path, "cp", "--method", "cogrnet", "--pre_max_iteration", "5",
                "--self_max_iteration", "5", "--lr_step", "2", "--lr_gamma", "0.5",
                "--base_lr", "0.02", "--val_list", "none")
    want = {("pre", k + 1): 0.02 * 0.5 ** (k // 2) for k in range(5)}
    want.update({("self", 6 + k): 0.02 * 0.5 ** (k // 2) for k in range(5)})
    assert _lrs(rows) == pytest.approx(want)


def test_lr_schedule_single_stage(phantoms8, tmp_path):
    rows = _run(phantoms8, tmp_path, "s", "--method", "sup", "--max_iteration", "7",
                "--batch_size", "2", "--lr_step", "3", "--val_list", "none")
    assert _lrs(rows) == pytest.approx({("train", k + 1): 0.01 * 0.1 ** (k // 3)
                                        for k in range(7)})


def test_overwrite_starts_a_fresh_metrics_record(phantoms8, tmp_path):
    """``--overwrite`` starts over: nothing of the earlier run stays to be taken for this
    one (its metrics, log lines, TensorBoard events, stage-best checkpoints)."""
    args = ["--method", "sup", "--max_iteration", "2", "--batch_size", "2", "--val_list", "none"]
    _run(phantoms8, tmp_path, "o", *args)
    run = tmp_path / "o"
    (run / "pretrain_best.pth").write_bytes((run / "best.pth").read_bytes())  # a cogrnet run's
    earlier = run / "tb" / "events.out.tfevents.1.earlier"  # named apart from this run's
    next((run / "tb").iterdir()).rename(earlier)
    # an --overwrite that fails before its first step leaves the earlier run whole
    log = (run / "log.txt").read_text()
    with pytest.raises(ConfigError, match="--labelnum 99"):  # found after the log is open
        _run(phantoms8, tmp_path, "o", *args, "--overwrite", "--labelnum", "99")
    assert (run / "log.txt").read_text() == log and earlier.exists()
    rows = _run(phantoms8, tmp_path, "o", *args, "--overwrite")
    assert [r["iteration"] for r in rows] == [1, 2]
    assert (run / "log.txt").read_text().count(f"run {run} on ") == 1
    assert not earlier.exists() and not (run / "pretrain_best.pth").exists()
    assert (run / "best.pth").exists()  # this run's own


def test_resume_may_lengthen_a_run_but_not_redo_its_finished_pre_training(phantoms8, tmp_path):
    """A resumed run may train longer (said in the log); a longer pre-training of a run past
    it would pre-train the self-trained student again: refused in one line."""
    args = ["--method", "cogrnet", "--pre_max_iteration", "1", "--self_max_iteration", "1",
            "--val_list", "none"]
    _run(phantoms8, tmp_path, "c", *args)
    with pytest.raises(ConfigError, match=r"pre_max_iteration 1 \(checkpoint, past its "
                                          r"pre-training\) vs 2"):
        _run(phantoms8, tmp_path, "c", *args, "--resume", "--pre_max_iteration", "2")
    rows = _run(phantoms8, tmp_path, "c", *args, "--resume", "--self_max_iteration", "2")
    assert [r["iteration"] for r in rows if "lr" in r] == [1, 2, 3]
    assert "another run length (self_max_iteration 1 -> 2)" in (tmp_path / "c" / "log.txt"
                                                                ).read_text()
