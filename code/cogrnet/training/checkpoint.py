"""A training run's checkpoints, written and read back: ``last.pth`` (what ``--resume``
continues, with the optimizer; the generation before it is kept as ``last_prev.pth``) and each
stage's best (the weights, the teacher's too where the stage has one), and what ``--resume``
checks: the run's ``last.pth`` (or the generation before it) must be an intact checkpoint
made with the same settings (:data:`RESUME_KEYS`, the method's own). The
checkpoint format and its atomic, checksummed file: :mod:`cogrnet.checkpoints`.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from ..checkpoints import atomic_torch_save, load_checkpoint, make_checkpoint
from ..errors import ConfigError, DataError
from ..inference.model import load_weights
from ..methods.base import Stage
from ..methods.ema import make_teacher
from ..train_config import TrainConfig
from .state import RunState

LAST = "last.pth"
LAST_PREV = "last_prev.pth"  # the generation of last.pth before the newest
#: the settings that define what every method's run trains, with the method's own
#: (:attr:`cogrnet.methods.base.Method.settings`): a --resume with another value of any
#: would make one run of two (a checkpoint without a key, from an older version: not compared)
RESUME_KEYS = ("method", "network", "intensity", "dataset", "num_classes", "labelnum",
               "label_source", "coarse_mode", "confidence_weighting", "val_list", "augment",
               "patch_size", "batch_size", "labeled_bs", "base_lr", "momentum",
               "weight_decay", "lr_step", "lr_gamma", "seed")
#: the run's length: a --resume may change it (to train on), said in the log
LENGTH_KEYS = ("max_iteration", "pre_max_iteration", "self_max_iteration")
RUN_STATE_KEYS = ("optimizer", "iteration", "stage", "extra")  # what a resume reads
_KEY_DEFAULTS = {"intensity": "none"}  # settings older checkpoints do not record


def resume_checkpoint(last: str | Path, previous: str | Path) -> Path | None:
    """The checkpoint ``--resume`` continues: ``last`` (the run's ``last.pth``), or, when it
    is missing (removed by hand, or left so by an older version's save), ``previous`` (the
    generation before, ``last_prev.pth``); ``None`` when there is neither."""
    for path in map(Path, (last, previous)):
        if path.exists():
            return path
    return None


def _damaged(err: DataError, last: Path, previous: Path) -> DataError:
    """``err`` (``last`` is damaged) with what to do: continue from ``previous`` when it
    loads, else ``--overwrite``."""
    try:
        ok = load_checkpoint(previous, map_location="cpu")
    except DataError:
        return DataError(f"{err}; no good previous checkpoint ({previous.name}): --overwrite "
                         "starts over")
    return DataError(f"{err}; the previous checkpoint {previous} (iteration "
                     f"{ok['iteration']}) is good: move {last.name} away and --resume "
                     "continues from it")


def _stage_of(path: Path, name: str, stages: Sequence[Stage], method: str) -> Stage:
    """The stage ``name`` a checkpoint (``path``) was written in, one of ``stages``."""
    stage = next((s for s in stages if s.name == name), None)
    if stage is None:
        raise DataError(f"{path}: stage '{name}' is not a stage of method {method}")
    return stage


def _check_run_state(path: Path, ckpt: dict[str, Any], stages: Sequence[Stage],
                     method: str) -> None:
    """``ckpt`` (read from ``path``) must hold a run's state: the optimizer, iteration,
    stage (one of ``stages``, when given) and method state, and the teacher when its stage
    has one."""
    missing = [k for k in RUN_STATE_KEYS if ckpt.get(k) is None]
    if missing:
        raise DataError(f"{path}: cannot resume from this checkpoint: it lacks "
                        f"{', '.join(missing)} (only a run's last.pth holds a run's state)")
    if not stages:
        return
    stage = _stage_of(path, ckpt["stage"], stages, method)
    if stage.teacher and ckpt.get("ema") is None:
        raise DataError(f"{path}: cannot resume stage '{stage.name}': the checkpoint holds "
                        "no teacher (ema) weights")


def check_resume(path: str | Path, cfg: TrainConfig, previous: str | Path | None = None,
                 stages: Sequence[Stage] = ()) -> list[str]:
    """Before a ``--resume`` run writes anything: ``path`` (the run's ``last.pth``, else
    ``previous``: see :func:`resume_checkpoint`) must be an intact checkpoint made with the
    same :data:`RESUME_KEYS` settings as ``cfg``, holding a run's state (a teacher where its
    stage, one of ``stages``, has one); a one-line error naming the file and the differing
    settings or what it lacks otherwise. A damaged ``last.pth`` is refused, naming
    ``previous`` when that one is good. Returns the changes of the run's length
    (:data:`LENGTH_KEYS`, ``"max_iteration 3 -> 5"``), which a resume may make. No file:
    nothing to check."""
    last = Path(path)
    path = resume_checkpoint(last, previous if previous is not None else last)
    if path is None:
        return []
    try:
        ckpt = load_checkpoint(path, map_location="cpu")
    except DataError as err:
        if previous is None or path != last or not Path(previous).exists():
            raise
        raise _damaged(err, last, Path(previous)) from None
    from ..methods.registry import method_class

    old, new = ckpt["config"], cfg.to_dict()
    diffs = []
    past_first = bool(stages) and ckpt.get("stage") != stages[0].name
    if past_first and old.get("pre_max_iteration", new["pre_max_iteration"]) != \
            new["pre_max_iteration"]:  # the pre-training would start again
        diffs.append(f"pre_max_iteration {old['pre_max_iteration']!r} (checkpoint, past its "
                     f"pre-training) vs {new['pre_max_iteration']!r}")
    for key in RESUME_KEYS + method_class(cfg.method).settings:
        if key not in old and key not in _KEY_DEFAULTS:
            continue  # an older checkpoint that does not record it
        a, b = old.get(key, _KEY_DEFAULTS.get(key)), new[key]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k} {a.get(k)!r} (checkpoint) vs {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            diffs.append(f"{key} {a!r} (checkpoint) vs {b!r}")
    if diffs:
        raise ConfigError(f"--resume: {path} was written with other settings: "
                          f"{'; '.join(diffs)} (pass the run's own settings, or --overwrite "
                          "to start over)")
    _check_run_state(path, ckpt, stages, cfg.method)
    return [f"{key} {old[key]} -> {new[key]}" for key in LENGTH_KEYS
            if key in old and old[key] != new[key]]


def save_run(run_dir: Path, name: str, run: RunState, config: dict[str, Any], stage: str,
             extra: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``name`` of ``run`` into ``run_dir`` (``stage``: the stage's name,
    ``config``: the resolved run config, ``extra``: more entries for ``extra``, e.g. the
    validation Dice). :data:`LAST` holds the optimizer too and keeps the generation before
    it as :data:`LAST_PREV`; a stage-best checkpoint holds the weights (the teacher's too)."""
    path = run_dir / name
    last = name == LAST
    ckpt = make_checkpoint(
        run.student.state_dict(), config, run.iteration, stage,
        ema_state=run.teacher.state_dict() if run.teacher is not None else None,
        optimizer_state=run.optimizer.state_dict() if last else None,
        extra={"method_state": run.method_state, **(extra or {})})
    atomic_torch_save(ckpt, path, previous=run_dir / LAST_PREV if last else None)
    return path


def restore_run(path: Path, run: RunState, stages: Sequence[Stage], method: str,
                device: torch.device) -> None:
    """Load the checkpoint ``path`` (the run's ``last.pth`` or the generation before) into
    ``run``: the student, the teacher (a teacher stage), the optimizer, the method state,
    the iteration and the stage it was written in (one of ``stages`` of ``method``)."""
    ckpt = load_checkpoint(path, map_location=device)
    load_weights(run.student, ckpt["model"], path)
    run.iteration, run.resumed_stage = ckpt["iteration"], ckpt["stage"]
    run.method_state = ckpt["extra"].get("method_state", run.method_state)
    stage = _stage_of(path, run.resumed_stage, stages, method)
    run.teacher = None
    if stage.teacher:
        run.teacher = make_teacher(run.student)
        load_weights(run.teacher, ckpt["ema"], path)
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: its optimizer state does not fit this run's optimizer "
                        f"({type(err).__name__}: {str(err)[:120]})") from None


def load_student(path: Path, student: torch.nn.Module, device: torch.device) -> int:
    """Load the weights of checkpoint ``path`` (a stage's best) into ``student``; returns
    the iteration it was written at."""
    ckpt = load_checkpoint(path, map_location=device)
    load_weights(student, ckpt["model"], path)
    return ckpt["iteration"]


def free_space_warning(run_dir: Path, student: torch.nn.Module,
                       stages: Sequence[Stage]) -> str | None:
    """A warning with the numbers when ``run_dir``'s file system has less room than the
    checkpoints the run keeps (each stage's best, ``last.pth``, ``last_prev.pth`` and the
    temporary of a save); ``None`` when there is room."""
    weights = sum(t.numel() * t.element_size() for t in student.state_dict().values())
    teacher = any(s.teacher for s in stages)
    size = weights * (2 + teacher)  # student, optimizer momentum, teacher
    files = len({s.best_name for s in stages}) + 3
    free = shutil.disk_usage(run_dir).free
    if free >= files * size:
        return None
    mib = 2 ** 20
    return (f"only {free / mib:.1f} MiB free for {run_dir}: this run keeps up to {files} "
            f"checkpoints of about {size / mib:.1f} MiB ({files * size / mib:.1f} MiB); a full "
            "disk stops it (free space, then --resume)")
