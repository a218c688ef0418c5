"""The one training loop every method runs through.

A run lives in ``<out_root>/<exp>/``: ``config.json``, ``log.txt``, ``tb/`` (TensorBoard),
``environment.jsonl`` (one line per start or resume: torch, threads, device), the stage-best
checkpoints (``pretrain_best.pth``, ``best.pth``), ``last.pth`` and the generation before it,
``last_prev.pth``. One process at a time writes there (:func:`cogrnet.fileio.lock_folder`);
a failed write ends the run with one line and keeps the files written before.
Batches, Focus Area cuboids and dropout masks are seeded by (seed, iteration), so a run
resumed from ``last.pth`` reproduces an uninterrupted one exactly on the CPU (at the same
number of intra-op threads: another count changes the float sums from the first step).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from ..data.dataset import CaseStore
from ..data.samplers import PatchBatcher, Prefetcher
from ..errors import CoGRNetError, ConfigError, DataError, write_error, writable_dir
from ..evaluation import validation_dice
from ..fileio import FolderLock, append_line, lock_folder, read_jsonl, write_json_atomic
from ..checkpoints import atomic_torch_save, load_checkpoint, make_checkpoint
from ..inference.model import load_weights
from ..methods.base import Stage, StepContext
from ..methods.ema import make_teacher, update_ema
from ..methods.registry import build_method
from ..networks import build_network
from ..parallel import failure_reason
from ..runtime import (amp_dtype, autocast, check_speed, environment, resolve_device,
                       seed_everything, sgd_options)
from ..train_config import TrainConfig
from .checkpoint import check_resume, resume_checkpoint
from .distributed import (any_rank, average_over_ranks, barrier, broadcast_buffers,
                          broadcast_object, distributed_context, world_size)
from .data import (check_coarse_dir, check_coarse_files, check_val_cases, labeled_volumes,
                   resolve_split, unlabeled_volumes)
from .graphs import GraphedCall

LOG = logging.getLogger("cogrnet.train")
LAST = "last.pth"
LAST_PREV = "last_prev.pth"  # the generation of last.pth before the newest
ENVIRONMENT = "environment.jsonl"
METRICS = "metrics.jsonl"
TB_QUEUE = 1_000_000  # TensorBoard events waiting for the writer thread, at most
WARMUP = 5  # iterations left out of the it/s figure (cudnn autotuning, allocator warm-up)
EMPTY_FG = 1e-4  # a teacher label with less foreground than this fraction counts as empty


class TrainingError(CoGRNetError):
    """Training cannot go on (e.g. a non-finite loss)."""


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop saves ``last.pth`` and returns at the next step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _iteration_seed(seed: int, iteration: int) -> int:
    return int(np.random.default_rng([seed, 7, iteration]).integers(0, 2 ** 62))


def stage_lr(cfg: TrainConfig, stage: Stage, it: int) -> float:
    """The step schedule: ``base_lr * lr_gamma ** (it // step)``, ``it`` counted from the
    stage's start (a fresh optimizer per stage, as the reference), ``step`` the stage's own
    (``--pre_lr_step`` for pre-training) or ``--lr_step``."""
    step = stage.lr_step if stage.lr_step is not None else cfg.lr_step
    return cfg.base_lr * cfg.lr_gamma ** (it // step)


def _prepare_run_dir(cfg: TrainConfig, lock: bool) -> tuple[Path, FolderLock | None]:
    """The run folder, made and (``lock``: rank 0) locked for this process
    (:func:`~cogrnet.fileio.lock_folder`); a one-line error when another process holds it,
    or when it holds a run and neither ``--resume`` nor ``--overwrite`` was given."""
    run_dir = Path(cfg.out_root) / cfg.exp
    held = lock_folder(run_dir, "--out_root/--exp") if lock else None
    if not lock:
        writable_dir(run_dir, "--out_root/--exp")
    has_run = resume_checkpoint(run_dir / LAST, run_dir / LAST_PREV)
    if has_run and not cfg.resume and not cfg.overwrite:
        if held is not None:
            held.release()
        raise ConfigError(f"{run_dir} already holds a run ({has_run.name}); pass --resume to "
                          "continue it or --overwrite to start over")
    return run_dir, held


class _LogFile(logging.FileHandler):
    """``log.txt``: a failed write ends the run (a :class:`~cogrnet.errors.WriteError`)
    instead of a traceback on the console and a log with a hole."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            raise write_error(self.baseFilename, err) from err
        super().handleError(record)


def _remove_run_dir(run_dir: Path) -> None:
    """Remove a run folder this process made for a run that failed before its first step
    (its log file closed first)."""
    for h in list(LOG.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == run_dir:
            LOG.removeHandler(h)
            h.close()
    shutil.rmtree(run_dir, ignore_errors=True)


def _setup_logging(run_dir: Path, is_main: bool = True) -> None:
    """``log.txt`` in the run folder plus the console; other ranks log warnings only."""
    LOG.setLevel(logging.INFO if is_main else logging.WARNING)
    for h in list(LOG.handlers):
        LOG.removeHandler(h)
        h.close()
    if not is_main:
        return
    fh = _LogFile(run_dir / "log.txt")
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOG.addHandler(fh)

    class _TqdmHandler(logging.Handler):
        def emit(self, record):
            tqdm.write(self.format(record))

    LOG.addHandler(_TqdmHandler())
    LOG.propagate = False


def _to_device(batch: dict[str, np.ndarray], device: torch.device,
               channels_last: bool, pin: bool = False) -> dict[str, torch.Tensor]:
    """Host arrays -> device tensors; ``pin``: through page-locked memory (an asynchronous
    copy on CUDA)."""
    out = {}
    for k, v in batch.items():
        t = torch.from_numpy(v)
        t = (t.pin_memory() if pin else t).to(device, non_blocking=True)
        if k == "image":
            t = t.contiguous(memory_format=torch.channels_last_3d) if channels_last else t
        elif k == "weight":
            t = t.float()
        else:
            t = t.long()
        out[k] = t
    return out


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
class _StageRun:
    """What the iterations of one stage share (:meth:`Trainer._open_stage`)."""

    stage: Stage
    student: torch.nn.Module
    teacher: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: Any
    ac: Callable[[], Any]
    state: dict[str, Any]
    lbs: int  # labeled patches per rank
    prefetch: Prefetcher
    forward: torch.nn.Module  # the student as called (DDP, compiled, graphed)
    t_call: Any  # the teacher as called
    bar: Any
    best: float  # the stage's best validation Dice so far


class _StageTimer:
    """Throughput of a stage: wall time of the loop, and the it/s and data-wait fraction
    after the first :data:`WARMUP` steps when there are more than ``2 * WARMUP``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.t_loop = time.perf_counter()
        self.t_warm, self.wait_warm = self.t_loop, 0.0
        self.n_done = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step_done(self, wait_seconds: float) -> None:
        """One optimizer step taken; ``wait_seconds``: the prefetcher's data wait so far."""
        self.n_done += 1
        if self.n_done == WARMUP:
            self._sync()
            self.t_warm, self.wait_warm = time.perf_counter(), wait_seconds

    def finish(self, wait_seconds: float) -> dict[str, Any] | None:
        """The stage's ``timing`` record (``None`` without steps)."""
        self._sync()
        end = time.perf_counter()
        n_done = self.n_done
        if not n_done:
            return None
        # steady state: after the first WARMUP iterations when there are enough of them
        steady = n_done > 2 * WARMUP
        t0, w0, n = ((self.t_warm, self.wait_warm, n_done - WARMUP) if steady
                     else (self.t_loop, 0.0, n_done))
        elapsed = max(end - t0, 1e-9)
        wait = (wait_seconds - w0) / elapsed
        return {"iterations": n_done, "seconds": end - self.t_loop, "it_per_s": n / elapsed,
                "data_wait_fraction": wait, "excludes_warmup": steady}


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
        self.run_dir, self._lock = _prepare_run_dir(cfg, lock=self.is_main)
        try:
            if cfg.resume:  # an incompatible or damaged last.pth fails before any write
                check_resume(self.run_dir / LAST, cfg, self.run_dir / LAST_PREV)
            _setup_logging(self.run_dir, self.is_main)
            seed_everything(cfg.seed, deterministic=cfg.deterministic)
            self.store = CaseStore(cfg.root_path, num_classes=cfg.num_classes,
                                   intensity=cfg.intensity)
            self.split = resolve_split(self.store, cfg)
            check_coarse_files(cfg, self.split.labeled)
        except BaseException:
            self.release()
            if fresh and self.is_main:  # a run that never started leaves no folder behind
                _remove_run_dir(self.run_dir)
            raise
        self.writer = None
        self.interrupted: int | None = None  # the signal that stopped the run
        self.timing: dict[str, dict[str, Any]] = {}  # per stage: it/s, data-wait fraction

    # ------------------------------------------------------------------ setup
    def _load_data(self) -> None:
        cfg, sp = self.cfg, self.split
        LOG.info(f"labeled {len(sp.labeled)}, unlabeled {len(sp.unlabeled)}, validation "
                 f"{len(sp.val)} ({sp.val_source}); labels: {cfg.label_source}")
        t0 = time.perf_counter()
        self.labeled = labeled_volumes(self.store, sp.labeled, cfg)
        needs_u = any(s.unlabeled for s in self.stages)
        self.unlabeled = unlabeled_volumes(self.store, sp.unlabeled) if needs_u else []
        if needs_u and not self.unlabeled:
            raise ConfigError(f"method {cfg.method} needs unlabeled volumes but the train list "
                              "has none left after the labeled and validation IDs")
        LOG.info(f"loaded {len(self.labeled) + len(self.unlabeled)} volumes into memory in "
                 f"{time.perf_counter() - t0:.1f} s")
        patch = cfg.patch_size
        small = [f"{v.case_id} {tuple(v.image.shape)}" for v in self.labeled + self.unlabeled
                 if any(s < p for s, p in zip(v.image.shape, patch))]
        if small:
            LOG.info(f"{len(small)} volume(s) smaller than the patch {tuple(patch)} on some axis "
                     f"are zero-padded: {', '.join(small[:5])}{' ...' if len(small) > 5 else ''}")
        if self.is_main and self.split.val:  # a broken validation file fails now, not later
            check_val_cases(self.store, self.split.val)

    def _build_model(self) -> torch.nn.Module:
        model = build_network(self.cfg.network).to(self.device)
        if self.cfg.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        return model

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.SGD(model.parameters(), lr=c.base_lr, momentum=c.momentum,
                               weight_decay=c.weight_decay,
                               **sgd_options(c.sgd_impl))

    def _forward_module(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.cfg.compile:
            model = torch.compile(model, mode=self.cfg.compile_mode)
        if self.cfg.cuda_graphs in ("student", "all"):
            model = GraphedCall(model, training=True)
        return model

    # ------------------------------------------------------------ checkpoints
    def _save(self, name: str, student, teacher, optimizer, iteration: int, stage: Stage,
              state: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        path = self.run_dir / name
        if not self.is_main:
            return path
        ckpt = make_checkpoint(
            student.state_dict(), self.cfg.to_dict(), iteration, stage.name,
            ema_state=teacher.state_dict() if teacher is not None else None,
            optimizer_state=optimizer.state_dict() if optimizer is not None else None,
            extra={"method_state": state, **(extra or {})})
        atomic_torch_save(ckpt, path, previous=self.run_dir / LAST_PREV if name == LAST else None)
        return path

    def _check_free_space(self, student: torch.nn.Module) -> None:
        """Before the first step: a warning with the numbers when the run folder's file
        system has less room than the checkpoints this run keeps (each stage's best,
        ``last.pth``, ``last_prev.pth`` and the temporary of a save)."""
        if not self.is_main:
            return
        weights = sum(t.numel() * t.element_size() for t in student.state_dict().values())
        teacher = any(s.teacher for s in self.stages)
        size = weights * (2 + teacher)  # student, optimizer momentum, teacher
        files = len({s.best_name for s in self.stages}) + 3
        free = shutil.disk_usage(self.run_dir).free
        if free < files * size:
            mib = 2 ** 20
            LOG.warning(f"only {free / mib:.1f} MiB free for {self.run_dir}: this run keeps up "
                        f"to {files} checkpoints of about {size / mib:.1f} MiB "
                        f"({files * size / mib:.1f} MiB); a full disk stops it (free space, "
                        "then --resume)")

    # ------------------------------------------------------------- validation
    def _validate(self, model: torch.nn.Module) -> dict[str, float] | None:
        """Dice per validation case (``case_id -> dice``), ``None`` without a list."""
        if not self.split.val or not self.is_main:
            return None
        return self.validator(model, self)

    def _validation_round(self, stage: Stage, global_it: int, student, teacher,
                          state: dict[str, Any]) -> float | None:
        """Validate the student (and the teacher, when there is one); scalars to TensorBoard,
        per-case Dice and the unlabeled volumes' pseudo-label foreground to ``metrics.jsonl``.
        Returns the student's mean Dice."""
        cases = self._validate(student)
        if cases is None:
            return None
        dice = float(np.mean(list(cases.values())))
        row: dict[str, Any] = {"iteration": global_it, "stage": stage.name, "val/dice": dice,
                               "val/case_dice": cases}
        self._scalar("val/dice", dice, global_it)
        msg = f"iteration {global_it}: validation Dice {dice:.4f}"
        if teacher is not None:
            t_cases = self._validate(teacher)
            t_dice = float(np.mean(list(t_cases.values())))
            row.update({"val/teacher_dice": t_dice, "val/teacher_case_dice": t_cases})
            self._scalar("val/teacher_dice", t_dice, global_it)
            msg += f", teacher {t_dice:.4f}"
        fg = state.get("unlabeled_fg")
        if stage.unlabeled and fg:
            empty = sum(v < EMPTY_FG for v in fg.values())
            row.update({"train/unlabeled_fg": fg, "train/unlabeled_empty": empty})
            self._scalar("train/unlabeled_empty_volumes", empty, global_it)
            msg += f"; teacher label empty on the last patch of {empty}/{len(fg)} unlabeled volumes"
        zero = [c for c, d in cases.items() if d == 0]
        if zero:
            msg += f"; Dice 0 on {', '.join(zero)}"
        self._record(row)
        LOG.info(msg)
        return dice

    def _track_unlabeled_fg(self, out, index: np.ndarray | None, state: dict[str, Any]) -> None:
        """Last teacher-label foreground fraction per unlabeled volume (``state``, so it is
        in checkpoints and survives a resume)."""
        if out.unlabeled_fg is None or index is None:
            return
        fg = state.setdefault("unlabeled_fg", {})
        for i, v in zip(index.tolist(), out.unlabeled_fg.tolist()):
            fg[self.unlabeled[i].case_id] = round(float(v), 5)

    # ------------------------------------------------------------------- loop
    def run(self) -> Path:
        cfg = self.cfg
        self._open_record()
        LOG.info(f"run {self.run_dir} on {self.device} (amp={cfg.amp}, world={self.world}); "
                 f"method {cfg.method}")
        self._load_data()

        student = self._build_model()
        optimizer = self._optimizer(student)
        teacher, state, global_it, resumed_stage = self._resume(student, optimizer)
        self._record_environment(global_it)
        self._check_free_space(student)
        scaler = torch.amp.GradScaler("cuda", enabled=bool(cfg.amp) and self.device.type == "cuda"
                                      and amp_dtype(self.device) == torch.float16)
        graphs = cfg.cuda_graphs != "none"  # graphs need the autocast cache off
        ac = lambda: autocast(self.device, bool(cfg.amp), cache=not graphs)  # noqa: E731
        try:
            with _StopFlag() as stop:
                self._run_stages(student, teacher, optimizer, scaler, ac, state, global_it,
                                 resumed_stage, stop)
        finally:
            self.release()
        return self.run_dir

    def release(self) -> None:
        """Close the TensorBoard writer and let other processes have the run folder (at the
        end of :meth:`run`). A writer that cannot flush (a full disk) raises only when no
        other error is on its way."""
        failing = sys.exc_info()[1] is not None
        try:
            if self.__dict__.get("writer") is not None:
                writer, self.writer = self.writer, None
                try:
                    writer.close()
                except OSError as err:
                    if not failing:
                        raise write_error(self.run_dir / "tb", err) from err
        finally:
            if self._lock is not None:
                self._lock.release()

    def _open_record(self) -> None:
        """On rank 0: ``config.json``, a fresh ``metrics.jsonl`` (and no old checkpoint
        generations) unless resuming, and the TensorBoard writer."""
        if not self.is_main:
            return
        if not (self.cfg.resume and resume_checkpoint(self.run_dir / LAST,
                                                      self.run_dir / LAST_PREV)):
            for name in (METRICS, ENVIRONMENT, LAST, LAST_PREV):  # --overwrite: start over
                (self.run_dir / name).unlink(missing_ok=True)
        write_json_atomic(self.run_dir / "config.json", self.cfg.to_dict(), sort_keys=True)
        from tensorboardX import SummaryWriter

        # an unbounded queue: a writer thread that died (a full disk) must not block the loop,
        # whose own next write then ends the run in one line
        self.writer = SummaryWriter(str(self.run_dir / "tb"), max_queue=TB_QUEUE)

    def _record_environment(self, iteration: int) -> None:
        """Append this start's :func:`~cogrnet.runtime.environment` (and the iteration it
        starts from) to ``environment.jsonl``, and log it."""
        if not self.is_main:
            return
        env = {"iteration": iteration, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "world": self.world, **environment(self.device)}
        path = self.run_dir / ENVIRONMENT
        before = (read_jsonl(path) or [None])[-1] if iteration > 0 else None
        append_line(path, json.dumps(env))
        LOG.info(f"environment: torch {env['torch']}, {env['threads']} intra-op thread(s), "
                 f"{env['device']} ({env['device_name']})")
        changed = [k for k in ("torch", "threads", "device") if before and before.get(k) != env[k]]
        if changed:
            LOG.warning("resumed with " + ", ".join(
                f"{k} {env[k]} (before: {before.get(k)})" for k in changed)
                + ": from here the run is not bit-identical to an uninterrupted one")

    def _resume(self, student, optimizer) -> tuple[Any, dict[str, Any], int, str | None]:
        """With ``--resume`` and a ``last.pth``: load the student, teacher, optimizer and
        method state from it. Returns ``(teacher, method state, iteration, stage name)``
        (``None``, a fresh state, 0, ``None`` when starting from scratch)."""
        cfg = self.cfg
        state: dict[str, Any] = {"best": {}}
        last = resume_checkpoint(self.run_dir / LAST, self.run_dir / LAST_PREV)
        if not (cfg.resume and last):
            if cfg.resume:
                LOG.info(f"--resume: no {LAST} in {self.run_dir}; starting from scratch")
            return None, state, 0, None
        if last.name != LAST:
            LOG.info(f"--resume: no {LAST} in {self.run_dir}; continuing from the generation "
                     f"before, {last.name}")
        ckpt = load_checkpoint(last, map_location=self.device)
        load_weights(student, ckpt["model"], last)
        global_it, resumed_stage = ckpt["iteration"], ckpt["stage"]
        state = ckpt["extra"].get("method_state", state)
        stage = next((s for s in self.stages if s.name == resumed_stage), None)
        if stage is None:
            raise DataError(f"{last}: stage '{resumed_stage}' is not a stage of method "
                            f"{cfg.method}")
        teacher = None
        if stage.teacher:
            teacher = make_teacher(student)
            load_weights(teacher, ckpt["ema"], last)
        optimizer.load_state_dict(ckpt["optimizer"])
        LOG.info(f"resumed from {last} at iteration {global_it} (stage {resumed_stage})")
        return teacher, state, global_it, resumed_stage

    def _run_stages(self, student, teacher, optimizer, scaler, ac, state: dict[str, Any],
                    global_it: int, resumed_stage: str | None, stop: _StopFlag) -> None:
        offset = 0
        for k, stage in enumerate(self.stages):
            start, end = offset, offset + stage.iterations
            offset = end
            if global_it >= end:
                continue
            if not (resumed_stage == stage.name and global_it > start):
                student, teacher, optimizer = self._enter_stage(k, stage, student, state)
                for line in self.method.stage_start(stage, state):
                    LOG.info(line)
                state = broadcast_object(state)  # every rank uses rank 0's method state
            global_it, stopped = self._run_stage(stage, start, global_it, student, teacher,
                                                 optimizer, scaler, ac, state, stop)
            if stopped:
                self.interrupted = int(stop.signal or signal.SIGINT)
                return
        LOG.info(f"done: {global_it} iterations; checkpoints in {self.run_dir}")

    def _enter_stage(self, k: int, stage: Stage, student, state: dict[str, Any]):
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
            prev = self.stages[k - 1]
            path = self.run_dir / prev.best_name
            ckpt = load_checkpoint(path, map_location=self.device)
            load_weights(student, ckpt["model"], path)
            LOG.info(f"stage {stage.name}: student starts from {path} "
                     f"(iteration {ckpt['iteration']})")
        teacher = make_teacher(student) if stage.teacher else None
        return student, teacher, self._optimizer(student)

    def _run_stage(self, stage: Stage, start: int, global_it: int, student, teacher, optimizer,
                   scaler, ac, state: dict[str, Any], stop: _StopFlag) -> tuple[int, bool]:
        """Iterations of one stage from ``global_it``; returns the iteration reached and
        whether a signal stopped the stage."""
        run = self._open_stage(stage, start, global_it, student, teacher, optimizer, scaler,
                               ac, state)
        timer = _StageTimer(self.device)
        stopping = False
        try:
            for it in range(global_it - start, stage.iterations):
                lr = self._set_lr(optimizer, stage, it)
                out = self._forward_step(run, it, global_it)
                if self._skip_nonfinite(run, out, global_it):
                    global_it += 1
                    run.bar.update(1)
                    continue
                self._update(run, out, it)
                global_it += 1
                timer.step_done(run.prefetch.wait_seconds)
                self._log_step(global_it, stage, lr, out, run.bar)
                stopping = self._agree_stop(stop)
                self._maybe_validate(run, it, global_it)
                self._maybe_save(run, it, global_it, stopping)
                if stopping:
                    LOG.info(f"stopped by signal {stop.signal} at iteration {global_it}; "
                             f"{self.run_dir / LAST} saved; rerun with --resume to continue")
                    break
        finally:
            run.prefetch.close()
            run.bar.close()
        self._report_timing(stage, timer.finish(run.prefetch.wait_seconds))
        return global_it, stopping

    def _open_stage(self, stage: Stage, start: int, global_it: int, student, teacher,
                    optimizer, scaler, ac, state: dict[str, Any]) -> "_StageRun":
        """The batch pipeline (from ``global_it``), the forward modules, the stage's best
        Dice so far and the progress bar of one stage."""
        cfg = self.cfg
        lbs = cfg.labeled_bs // self.world
        ubs = (cfg.batch_size - cfg.labeled_bs) // self.world if stage.unlabeled else 0
        batcher = PatchBatcher(self.labeled, self.unlabeled if stage.unlabeled else [],
                               cfg.patch_size, lbs, ubs, cfg.seed, cfg.augment,
                               self.rank, self.world)
        prefetch = Prefetcher(batcher, global_it, workers=cfg.num_workers)
        forward = self._forward_module(student)
        student.train()
        if teacher is not None:
            teacher.eval()
        t_call = (GraphedCall(teacher, training=False) if teacher is not None
                  and cfg.cuda_graphs in ("teacher", "all") else teacher)
        best = state["best"].get(stage.name, -math.inf)
        bar = tqdm(total=stage.iterations, initial=global_it - start, desc=stage.name,
                   dynamic_ncols=True, disable=not self.is_main or not cfg.progress)
        return _StageRun(stage, student, teacher, optimizer, scaler, ac, state, lbs, prefetch,
                         forward, t_call, bar, best)

    def _set_lr(self, optimizer, stage: Stage, it: int) -> float:
        """Set the learning rate of iteration ``it`` of ``stage`` (:func:`stage_lr`)."""
        lr = stage_lr(self.cfg, stage, it)
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _forward_step(self, run: "_StageRun", it: int, global_it: int):
        """Seed torch and the step's generator by (seed, iteration), fetch the batch of
        ``global_it`` onto the device and run the method's step (its loss not yet applied)."""
        cfg = self.cfg
        torch.manual_seed(_iteration_seed(cfg.seed, global_it))
        rng = np.random.default_rng([cfg.seed, 11, global_it])
        try:
            host = run.prefetch.get(global_it)
        except CoGRNetError:
            raise
        except Exception as err:  # noqa: BLE001 - a data-loading thread failed
            raise TrainingError(
                f"the batch of iteration {global_it + 1} could not be built in a data-loading "
                f"thread ({failure_reason(err)}); {self.run_dir / LAST} holds the last saved "
                "state: --resume continues from it") from err
        u_index = host.pop("unlabeled_index", None)
        batch = _to_device(host, self.device, cfg.channels_last, cfg.pin_memory)
        if isinstance(run.forward, GraphedCall):
            run.forward.begin_step()
        ctx = StepContext(run.forward, run.t_call, it, run.stage, rng, run.lbs, run.ac,
                          run.state)
        out = self.method.step(batch, ctx)
        self._track_unlabeled_fg(out, u_index, run.state)
        return out

    def _skip_nonfinite(self, run: "_StageRun", out, global_it: int) -> bool:
        """``True`` when the loss is non-finite on some rank and ``--skip_nonfinite`` skips
        the step (on every rank); a :class:`TrainingError` without it."""
        if not any_rank(not bool(torch.isfinite(out.loss))):
            return False
        if self.cfg.skip_nonfinite:
            LOG.info(f"iteration {global_it}: non-finite loss, step skipped")
            run.optimizer.zero_grad(set_to_none=True)
            return True
        raise TrainingError(
            f"non-finite loss at iteration {global_it} (stage {run.stage.name}); the last "
            f"good checkpoint is {self.run_dir / LAST} (use --skip_nonfinite to skip "
            "such steps, or lower --base_lr)")

    def _update(self, run: "_StageRun", out, it: int) -> None:
        """Backward pass and optimizer step (through the AMP scaler), then the teacher's EMA
        (shared by all ranks)."""
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(out.loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.teacher is not None:
            update_ema(run.teacher, run.student, self.cfg.ema_decay, it,
                       warmup=run.stage.ema_warmup)
            if self.world > 1:
                broadcast_buffers(run.teacher)

    @staticmethod
    def _agree_stop(stop: _StopFlag) -> bool:
        """Whether any rank was signalled; read once per iteration and agreed by all ranks,
        so they stop together."""
        stopping = any_rank(stop.signal is not None)
        if stopping and stop.signal is None:
            stop.signal = signal.SIGTERM  # another rank was signalled
        return stopping

    def _maybe_validate(self, run: "_StageRun", it: int, global_it: int) -> None:
        """Every ``--val_interval`` iterations and at the stage's end: a validation round,
        saving the stage-best checkpoint on a new best Dice; without a validation list the
        stage's last weights are its best checkpoint."""
        stage, last_it = run.stage, it + 1 == run.stage.iterations
        if (it + 1) % self.cfg.val_interval == 0 or last_it:
            dice = self._validation_round(stage, global_it, run.student, run.teacher, run.state)
            if dice is not None and dice > run.best:
                run.best = dice
                run.state["best"][stage.name] = run.best
                self._save(stage.best_name, run.student, run.teacher, None, global_it, stage,
                           run.state, {"val_dice": dice})
                LOG.info(f"iteration {global_it}: best validation Dice so far, saved "
                         f"{stage.best_name}")
        if last_it and not self.split.val:
            self._save(stage.best_name, run.student, run.teacher, None, global_it, stage,
                       run.state)
            LOG.info(f"no validation list: {stage.best_name} holds the last weights")

    def _maybe_save(self, run: "_StageRun", it: int, global_it: int, stopping: bool) -> None:
        """``last.pth`` every ``--save_interval`` iterations, at the stage's end and when
        stopping."""
        if (global_it % self.cfg.save_interval == 0 or it + 1 == run.stage.iterations
                or stopping):
            self._save(LAST, run.student, run.teacher, run.optimizer, global_it, run.stage,
                       run.state)

    def _report_timing(self, stage: Stage, timing: dict[str, Any] | None) -> None:
        """Log a stage's throughput and keep it in :attr:`timing` (nothing without steps)."""
        if timing is None:
            return
        steady = timing["excludes_warmup"]
        LOG.info(f"stage {stage.name}: {timing['iterations']} iterations in "
                 f"{timing['seconds']:.1f} s; {timing['it_per_s']:.2f} it/s"
                 f"{' after warm-up' if steady else ''}, data wait "
                 f"{100 * timing['data_wait_fraction']:.1f}% of step time")
        self.timing[stage.name] = timing

    # ---------------------------------------------------------------- logging
    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def _record(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl`` (after a resume, a reader keeps the last row
        of each iteration)."""
        if self.is_main:
            append_line(self.run_dir / METRICS, json.dumps(row))

    def _log_step(self, step: int, stage: Stage, lr: float, out, bar) -> None:
        scalars = average_over_ranks(out.scalars)
        bar.update(1)
        main_loss = next(iter(scalars.values()), None) or out.loss.item()
        bar.set_postfix(loss=f"{main_loss:.4f}", lr=f"{lr:.2g}")
        self._record({"iteration": step, "stage": stage.name, "lr": lr, **scalars})
        if self.writer is None:
            return
        self.writer.add_scalar("train/lr", lr, step)
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)
        if out.snapshot and step % self.cfg.image_interval == 0:
            self._write_snapshot(out.snapshot, step)
        if step % 50 == 0:
            LOG.info(f"iteration {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))

    def _write_snapshot(self, snapshot: dict[str, torch.Tensor], step: int) -> None:
        """The middle axial slice of the step's image, target and prediction to TensorBoard."""
        z = snapshot["image"].shape[-1] // 2
        img = snapshot["image"][..., z].float()
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        self.writer.add_image("train/image", img[None].cpu(), step)
        for key in ("target", "prediction"):
            lab = snapshot[key][..., z].float()
            self.writer.add_image(f"train/{key}", (lab / max(1.0, float(lab.max())))[None].cpu(), step)


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
