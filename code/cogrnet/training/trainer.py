"""The one training loop every method runs through.

A run lives in ``<out_root>/<exp>/``: ``config.json``, ``log.txt``, ``tb/`` (TensorBoard),
``environment.jsonl`` (one line per start or resume: torch, threads, device), the stage-best
checkpoints (``pretrain_best.pth``, ``best.pth``), ``last.pth`` and the generation before it,
``last_prev.pth``. One process at a time writes there (:func:`cogrnet.fileio.lock_folder`);
a failed write ends the run with one line and keeps the files written before.
Batches, Focus Area cuboids and dropout masks are seeded by (seed, iteration), so a run
resumed from ``last.pth`` reproduces an uninterrupted one exactly on the CPU (at the same
number of intra-op threads: another count changes the float sums from the first step).

The run's state travels as one :class:`~cogrnet.training.state.RunState`; what the run
writes about itself is :mod:`~cogrnet.training.recording`'s, its checkpoints
:mod:`~cogrnet.training.checkpoint`'s.
"""
from __future__ import annotations

import math
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from ..data.dataset import CaseStore
from ..data.samplers import PatchBatcher, Prefetcher
from ..errors import CoGRNetError
from ..evaluation import validation_dice
from ..methods.base import Stage, StepContext, StepOutput
from ..methods.ema import make_teacher, update_ema
from ..methods.registry import build_method
from ..networks import build_network
from ..parallel import failure_reason
from ..runtime import amp_dtype, autocast, check_speed, resolve_device, seed_everything, sgd_options
from ..train_config import TrainConfig
from .checkpoint import (LAST, LAST_PREV, check_resume, free_space_warning, load_student,
                         restore_run, resume_checkpoint, save_run)
from .data import (batch_to_device, check_coarse_dir, check_coarse_files, load_training_volumes,
                   resolve_split)
from .distributed import (StopFlag, any_rank, barrier, broadcast_buffers, broadcast_object,
                          distributed_context, world_size)
from .graphs import GraphedCall, student_call, teacher_call
from .recording import (ENVIRONMENT, LOG, METRICS, Recorder, StageTimer, prepare_run_dir,
                        remove_run_dir)
from .state import RunState

__all__ = ["ENVIRONMENT", "LAST", "LAST_PREV", "METRICS", "TrainResult", "Trainer",
           "TrainingError", "Validator", "stage_lr", "train", "validate_cases"]

EMPTY_FG = 1e-4  # a teacher label with less foreground than this fraction counts as empty


class TrainingError(CoGRNetError):
    """Training cannot go on (e.g. a non-finite loss)."""


def _iteration_seed(seed: int, iteration: int) -> int:
    return int(np.random.default_rng([seed, 7, iteration]).integers(0, 2 ** 62))


def stage_lr(cfg: TrainConfig, stage: Stage, it: int) -> float:
    """The step schedule: ``base_lr * lr_gamma ** (it // step)``, ``it`` counted from the
    stage's start (a fresh optimizer per stage, as the reference), ``step`` the stage's own
    (``--pre_lr_step`` for pre-training) or ``--lr_step``."""
    step = stage.lr_step if stage.lr_step is not None else cfg.lr_step
    return cfg.base_lr * cfg.lr_gamma ** (it // step)


#: Dice per validation case of a model (``case_id -> dice``), given the trainer
Validator = Callable[[torch.nn.Module, "Trainer"], dict[str, float]]


def validate_cases(model: torch.nn.Module, trainer: "Trainer") -> dict[str, float]:
    """The default :data:`Validator`: :func:`cogrnet.evaluation.validation_dice` on the run's
    validation IDs, with the training patch and ``--val_overlap``."""
    cfg = trainer.cfg
    return validation_dice(model, trainer.store, trainer.split.val, cfg.patch_size,
                           cfg.num_classes, device=trainer.device, amp=cfg.amp,
                           overlap=cfg.val_overlap)


@dataclass
class _StageLoop:
    """What the iterations of one stage share besides the run's state
    (:meth:`Trainer._open_stage`)."""

    stage: Stage
    labeled_per_rank: int  # labeled patches in each rank's batch
    prefetch: Prefetcher
    student_call: torch.nn.Module  # the student as the step calls it (DDP, compiled, graphed)
    teacher_call: torch.nn.Module | None  # the teacher as the step calls it
    progress: Any  # the stage's tqdm progress bar
    best: float  # the stage's best validation Dice so far


class Trainer:
    """Trains ``cfg.method`` as ``cfg`` (:func:`cogrnet.training.config.resolve_config`)
    says; ``validator`` scores the validation cases (default :func:`validate_cases`).
    ``self.cfg`` is ``cfg`` with the device's choices made (``amp``, ``channels_last``)."""

    def __init__(self, cfg: TrainConfig, validator: Validator | None = None):
        self.validator = validator if validator is not None else validate_cases
        self.device = resolve_device(cfg.device)
        cuda = self.device.type == "cuda"  # the auto switches: on for CUDA
        self.cfg = cfg = cfg.replace(
            amp=cuda if cfg.amp is None else cfg.amp,
            channels_last=cuda if cfg.channels_last is None else cfg.channels_last)
        self.rank = int(os.environ.get("RANK", 0))
        self.world = world_size()
        self.is_main = self.rank == 0
        check_speed(cfg, self.device, self.world)
        self.method = build_method(cfg)
        self.stages = self.method.stages()
        check_coarse_dir(cfg)
        fresh = not (Path(cfg.out_root) / cfg.exp).exists()
        self.run_dir, self._lock = prepare_run_dir(cfg, lock=self.is_main)
        self.recorder = Recorder(self.run_dir, self.is_main, cfg.image_interval)
        try:
            lengths = []  # the run's length, changed by this --resume
            if cfg.resume:  # an incompatible or damaged last.pth fails before any write
                lengths = check_resume(self.run_dir / LAST, cfg, self.run_dir / LAST_PREV,
                                       self.stages)
            self.recorder.open_log()
            if lengths:
                LOG.warning(f"--resume with another run length ({', '.join(lengths)}): the "
                            "ramps over the run (consistency weight, UA-MT's threshold) follow "
                            "the new length from here")
            seed_everything(cfg.seed, deterministic=cfg.deterministic)
            self.store = CaseStore(cfg.root_path, num_classes=cfg.num_classes,
                                   intensity=cfg.intensity)
            self.split = resolve_split(self.store, cfg)
            check_coarse_files(cfg, self.split.labeled)
        except BaseException:
            self.release()
            if fresh and self.is_main:  # a run that never started leaves no folder behind
                remove_run_dir(self.run_dir)
            raise
        self.interrupted: int | None = None  # the signal that stopped the run

    @property
    def timing(self) -> dict[str, dict[str, Any]]:
        """Per stage: its iterations, seconds, it/s and data-wait fraction."""
        return self.recorder.timing

    # ------------------------------------------------------------------ setup
    def _load_data(self) -> None:
        self.labeled, self.unlabeled = load_training_volumes(
            self.store, self.split, self.cfg, needs_unlabeled=any(s.unlabeled for s in self.stages),
            check_validation=self.is_main)

    def _build_model(self) -> torch.nn.Module:
        model = build_network(self.cfg.network).to(self.device)
        if self.cfg.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        return model

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.SGD(model.parameters(), lr=cfg.base_lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, **sgd_options(cfg.sgd_impl))

    def _new_run_state(self) -> RunState:
        """A fresh student, its optimizer, the AMP loss scaler (float16 on CUDA) and the
        step's autocast (its cache off under CUDA graphs)."""
        cfg = self.cfg
        student = self._build_model()
        optimizer = self._optimizer(student)
        scaler = torch.amp.GradScaler("cuda", enabled=bool(cfg.amp) and self.device.type == "cuda"
                                      and amp_dtype(self.device) == torch.float16)
        graphs = cfg.cuda_graphs != "none"  # graphs need the autocast cache off

        def step_autocast() -> Any:
            return autocast(self.device, bool(cfg.amp), cache=not graphs)

        return RunState(student, optimizer, scaler, step_autocast)

    def _resume(self, run: RunState) -> None:
        """With ``--resume`` and a ``last.pth`` (or the generation before): ``run`` goes on
        from it (:func:`~cogrnet.training.checkpoint.restore_run`); else it starts from
        scratch."""
        cfg = self.cfg
        last = resume_checkpoint(self.run_dir / LAST, self.run_dir / LAST_PREV)
        if not (cfg.resume and last):
            if cfg.resume:
                LOG.info(f"--resume: no {LAST} in {self.run_dir}; starting from scratch")
            return
        if last.name != LAST:
            LOG.info(f"--resume: no {LAST} in {self.run_dir}; continuing from the generation "
                     f"before, {last.name}")
        restore_run(last, run, self.stages, cfg.method, self.device)
        LOG.info(f"resumed from {last} at iteration {run.iteration} (stage {run.resumed_stage})")

    def _save(self, name: str, run: RunState, stage: Stage,
              extra: dict[str, Any] | None = None) -> Path:
        """Checkpoint ``name`` of ``run`` in the run folder, written by rank 0
        (:func:`~cogrnet.training.checkpoint.save_run`)."""
        if not self.is_main:
            return self.run_dir / name
        return save_run(self.run_dir, name, run, self.cfg.to_dict(), stage.name, extra)

    def release(self) -> None:
        """Close the TensorBoard writer and let other processes have the run folder (at the
        end of :meth:`run`). A writer that cannot flush (a full disk) raises only when no
        other error is on its way."""
        failing = sys.exc_info()[1] is not None
        try:
            self.recorder.close(failing)
        finally:
            if self._lock is not None:
                self._lock.release()

    # ------------------------------------------------------------- validation
    def _validate(self, model: torch.nn.Module) -> dict[str, float] | None:
        """Dice per validation case (``case_id -> dice``), ``None`` without a list."""
        if not self.split.val or not self.is_main:
            return None
        return self.validator(model, self)

    def _validation_round(self, run: RunState, stage: Stage) -> float | None:
        """Validate the student (and the teacher, when there is one); scalars to TensorBoard,
        per-case Dice and the unlabeled volumes' pseudo-label foreground to ``metrics.jsonl``.
        Returns the student's mean Dice."""
        cases = self._validate(run.student)
        if cases is None:
            return None
        step, recorder = run.iteration, self.recorder
        dice = float(np.mean(list(cases.values())))
        row: dict[str, Any] = {"iteration": step, "stage": stage.name, "val/dice": dice,
                               "val/case_dice": cases}
        recorder.scalar("val/dice", dice, step)
        msg = f"iteration {step}: validation Dice {dice:.4f}"
        if run.teacher is not None:
            teacher_cases = self._validate(run.teacher)
            teacher_dice = float(np.mean(list(teacher_cases.values())))
            row.update({"val/teacher_dice": teacher_dice, "val/teacher_case_dice": teacher_cases})
            recorder.scalar("val/teacher_dice", teacher_dice, step)
            msg += f", teacher {teacher_dice:.4f}"
        fg = run.method_state.get("unlabeled_fg")
        if stage.unlabeled and fg:
            empty = sum(v < EMPTY_FG for v in fg.values())
            row.update({"train/unlabeled_fg": fg, "train/unlabeled_empty": empty})
            recorder.scalar("train/unlabeled_empty_volumes", empty, step)
            msg += f"; teacher label empty on the last patch of {empty}/{len(fg)} unlabeled volumes"
        zero = [c for c, d in cases.items() if d == 0]
        if zero:
            msg += f"; Dice 0 on {', '.join(zero)}"
        recorder.record(row)
        LOG.info(msg)
        return dice

    def _track_unlabeled_fg(self, out: StepOutput, index: np.ndarray | None,
                            method_state: dict[str, Any]) -> None:
        """Last teacher-label foreground fraction per unlabeled volume (in the method state,
        so it is in checkpoints and survives a resume)."""
        if out.unlabeled_fg is None or index is None:
            return
        fg = method_state.setdefault("unlabeled_fg", {})
        for i, v in zip(index.tolist(), out.unlabeled_fg.tolist()):
            fg[self.unlabeled[i].case_id] = round(float(v), 5)

    # ------------------------------------------------------------------- loop
    def run(self) -> Path:
        """Train every stage (from ``last.pth`` with ``--resume``); returns the run folder."""
        cfg = self.cfg
        try:
            self.recorder.open_run_files(cfg)
            LOG.info(f"run {self.run_dir} on {self.device} (amp={cfg.amp}, "
                     f"world={self.world}); method {cfg.method}")
            self._load_data()
            run = self._new_run_state()
            self._resume(run)
            self.recorder.environment(run.iteration, self.world, self.device)
            if self.is_main:
                warning = free_space_warning(self.run_dir, run.student, self.stages)
                if warning:
                    LOG.warning(warning)
            with StopFlag() as stop:
                self._run_stages(run, stop)
        finally:
            self.release()
        return self.run_dir

    def _run_stages(self, run: RunState, stop: StopFlag) -> None:
        """The stages from ``run.iteration`` on; a signal ends the run after a step, with
        ``last.pth`` saved (:attr:`interrupted`)."""
        stage_end = 0
        for k, stage in enumerate(self.stages):
            start, stage_end = stage_end, stage_end + stage.iterations
            if run.iteration >= stage_end:
                continue
            if not (run.resumed_stage == stage.name and run.iteration > start):
                self._enter_stage(k, stage, run)
                for line in self.method.stage_start(stage, run.method_state):
                    LOG.info(line)
                # every rank uses rank 0's method state
                run.method_state = broadcast_object(run.method_state)
            if self._run_stage(run, stage, start, stop):
                self.interrupted = int(stop.signal or signal.SIGINT)
                return
        LOG.info(f"done: {run.iteration} iterations; checkpoints in {self.run_dir}")

    def _enter_stage(self, k: int, stage: Stage, run: RunState) -> None:
        """Fresh optimizer; a later stage starts from the previous stage's best weights
        (``--handover best``) or goes on from its last ones (``last``: the student holds
        them, also when resumed from the previous stage's final ``last.pth``); a teacher
        stage starts its teacher as a copy of the student."""
        if k > 0 and self.stages[k - 1].iterations == 0:
            LOG.info(f"stage {stage.name}: the previous stage has 0 iterations; the student "
                     "starts from its initial weights")
        elif k > 0 and self.cfg.handover == "last":
            LOG.info(f"stage {stage.name}: the student goes on from the last weights of stage "
                     f"{self.stages[k - 1].name} (--handover last: nothing selected on the "
                     "validation list)")
        elif k > 0:
            barrier()  # rank 0 has written the previous stage's best checkpoint
            path = self.run_dir / self.stages[k - 1].best_name
            iteration = load_student(path, run.student, self.device)
            LOG.info(f"stage {stage.name}: student starts from {path} (iteration {iteration})")
        run.teacher = make_teacher(run.student) if stage.teacher else None
        run.optimizer = self._optimizer(run.student)

    def _run_stage(self, run: RunState, stage: Stage, start: int, stop: StopFlag) -> bool:
        """The iterations of ``stage`` (which starts at global iteration ``start``) from
        ``run.iteration`` on; returns whether a signal stopped the stage."""
        loop = self._open_stage(run, stage, start)
        timer = StageTimer(self.device)
        stopping = False
        try:
            for it in range(run.iteration - start, stage.iterations):
                lr = self._set_lr(run.optimizer, stage, it)
                out = self._forward_step(run, loop, it)
                if self._skip_nonfinite(run, stage, out):
                    run.iteration += 1
                    loop.progress.update(1)
                    continue
                self._update(run, stage, out, it)
                run.iteration += 1
                timer.step_done(loop.prefetch.wait_seconds)
                self.recorder.step(run.iteration, stage, lr, out, loop.progress)
                stopping = stop.agreed()
                self._maybe_validate(run, loop, it)
                self._maybe_save(run, loop, it, stopping)
                if stopping:
                    LOG.info(f"stopped by signal {stop.signal} at iteration {run.iteration}; "
                             f"{self.run_dir / LAST} saved; rerun with --resume to continue")
                    break
        finally:
            loop.prefetch.close()
            loop.progress.close()
        self.recorder.stage_timing(stage, timer.finish(loop.prefetch.wait_seconds))
        return stopping

    def _open_stage(self, run: RunState, stage: Stage, start: int) -> _StageLoop:
        """The batch pipeline (from ``run.iteration``), the networks as the step calls them,
        the stage's best Dice so far and the progress bar of one stage."""
        cfg = self.cfg
        labeled_per_rank = cfg.labeled_bs // self.world
        unlabeled_per_rank = ((cfg.batch_size - cfg.labeled_bs) // self.world
                              if stage.unlabeled else 0)
        batcher = PatchBatcher(self.labeled, self.unlabeled if stage.unlabeled else [],
                               cfg.patch_size, labeled_per_rank, unlabeled_per_rank, cfg.seed,
                               cfg.augment, self.rank, self.world)
        prefetch = Prefetcher(batcher, run.iteration, workers=cfg.num_workers)
        student = student_call(run.student, cfg, self.world, self.device)
        run.student.train()
        if run.teacher is not None:
            run.teacher.eval()
        teacher = teacher_call(run.teacher, cfg)
        best = run.method_state["best"].get(stage.name, -math.inf)
        progress = tqdm(total=stage.iterations, initial=run.iteration - start, desc=stage.name,
                        dynamic_ncols=True, disable=not self.is_main or not cfg.progress)
        return _StageLoop(stage, labeled_per_rank, prefetch, student, teacher, progress, best)

    def _set_lr(self, optimizer: torch.optim.Optimizer, stage: Stage, it: int) -> float:
        """Set the learning rate of iteration ``it`` of ``stage`` (:func:`stage_lr`)."""
        lr = stage_lr(self.cfg, stage, it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _forward_step(self, run: RunState, loop: _StageLoop, it: int) -> StepOutput:
        """Seed torch and the step's generator by (seed, iteration), fetch the batch of
        ``run.iteration`` onto the device and run the method's step (its loss not yet
        applied); ``it``: the iteration within the stage."""
        cfg, step = self.cfg, run.iteration
        torch.manual_seed(_iteration_seed(cfg.seed, step))
        rng = np.random.default_rng([cfg.seed, 11, step])
        try:
            host = loop.prefetch.get(step)
        except CoGRNetError:
            raise
        except Exception as err:  # noqa: BLE001 - a data-loading thread failed
            raise TrainingError(
                f"the batch of iteration {step + 1} could not be built in a data-loading "
                f"thread ({failure_reason(err)}); {self.run_dir / LAST} holds the last saved "
                "state: --resume continues from it") from err
        unlabeled_index = host.pop("unlabeled_index", None)
        batch = batch_to_device(host, self.device, cfg.channels_last, cfg.pin_memory)
        if isinstance(loop.student_call, GraphedCall):
            loop.student_call.begin_step()
        ctx = StepContext(loop.student_call, loop.teacher_call, it, loop.stage, rng,
                          loop.labeled_per_rank, run.autocast, run.method_state)
        out = self.method.step(batch, ctx)
        self._track_unlabeled_fg(out, unlabeled_index, run.method_state)
        return out

    def _skip_nonfinite(self, run: RunState, stage: Stage, out: StepOutput) -> bool:
        """``True`` when the loss is non-finite on some rank and ``--skip_nonfinite`` skips
        the step (on every rank); a :class:`TrainingError` without it."""
        if not any_rank(not bool(torch.isfinite(out.loss))):
            return False
        if self.cfg.skip_nonfinite:
            LOG.info(f"iteration {run.iteration}: non-finite loss, step skipped")
            run.optimizer.zero_grad(set_to_none=True)
            return True
        raise TrainingError(
            f"non-finite loss at iteration {run.iteration} (stage {stage.name}); the last "
            f"good checkpoint is {self.run_dir / LAST} (use --skip_nonfinite to skip "
            "such steps, or lower --base_lr)")

    def _update(self, run: RunState, stage: Stage, out: StepOutput, it: int) -> None:
        """Backward pass and optimizer step (through the AMP scaler), then the teacher's EMA
        (shared by all ranks)."""
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(out.loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.teacher is not None:
            update_ema(run.teacher, run.student, self.cfg.ema_decay, it,
                       warmup=stage.ema_warmup)
            if self.world > 1:
                broadcast_buffers(run.teacher)

    def _maybe_validate(self, run: RunState, loop: _StageLoop, it: int) -> None:
        """Every ``--val_interval`` iterations and at the stage's end: a validation round,
        saving the stage-best checkpoint on a new best Dice; without a validation list the
        stage's last weights are its best checkpoint."""
        stage, last_it = loop.stage, it + 1 == loop.stage.iterations
        if (it + 1) % self.cfg.val_interval == 0 or last_it:
            dice = self._validation_round(run, stage)
            if dice is not None and dice > loop.best:
                loop.best = dice
                run.method_state["best"][stage.name] = loop.best
                self._save(stage.best_name, run, stage, {"val_dice": dice})
                LOG.info(f"iteration {run.iteration}: best validation Dice so far, saved "
                         f"{stage.best_name}")
        if last_it and not self.split.val:
            self._save(stage.best_name, run, stage)
            LOG.info(f"no validation list: {stage.best_name} holds the last weights")

    def _maybe_save(self, run: RunState, loop: _StageLoop, it: int, stopping: bool) -> None:
        """``last.pth`` every ``--save_interval`` iterations, at the stage's end and when
        stopping."""
        if (run.iteration % self.cfg.save_interval == 0 or it + 1 == loop.stage.iterations
                or stopping):
            self._save(LAST, run, loop.stage)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` leaves: the run folder, and the signal that stopped the run
    (``last.pth`` saved; ``--resume`` continues it), ``None`` when it ran to its end."""

    run_dir: Path
    interrupted: int | None


def train(cfg: TrainConfig) -> TrainResult:
    """Train one run as ``cfg`` (:func:`cogrnet.training.config.parse_config`) says, under
    ``torchrun`` too (:func:`cogrnet.training.distributed.distributed_context`)."""
    with distributed_context(cfg) as cfg:
        trainer = Trainer(cfg)
        run_dir = trainer.run()
    return TrainResult(run_dir, trainer.interrupted)
