"""What a run writes about itself into its folder ``<out_root>/<exp>/``: ``config.json``,
``log.txt`` (and the console), ``metrics.jsonl`` (one row per step and per validation round),
``environment.jsonl`` (one line per start or resume), TensorBoard scalars and image
snapshots under ``tb/``, and each stage's throughput. Only rank 0 writes; the others log
warnings only. :class:`Recorder` is what the trainer calls.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..errors import ConfigError, write_error, writable_dir
from ..fileio import FolderLock, append_line, lock_folder, read_jsonl, write_json_atomic
from ..methods.base import Stage, StepOutput
from ..runtime import environment
from ..train_config import TrainConfig
from .checkpoint import LAST, LAST_PREV, resume_checkpoint
from .distributed import average_over_ranks

LOG = logging.getLogger("cogrnet.train")
ENVIRONMENT = "environment.jsonl"
METRICS = "metrics.jsonl"
TB_QUEUE = 1_000_000  # TensorBoard events waiting for the writer thread, at most
WARMUP = 5  # iterations left out of the it/s figure (cudnn autotuning, allocator warm-up)
LOSS_LOG_INTERVAL = 50  # iterations between two loss lines in the log


def prepare_run_dir(cfg: TrainConfig, lock: bool) -> tuple[Path, FolderLock | None]:
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


class _ConsoleHandler(logging.Handler):
    """Log lines to the console through tqdm, so that they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def remove_run_dir(run_dir: Path) -> None:
    """Remove a run folder this process made for a run that failed before its first step
    (its log file closed first)."""
    for handler in list(LOG.handlers):
        if (isinstance(handler, logging.FileHandler)
                and Path(handler.baseFilename).parent == run_dir):
            LOG.removeHandler(handler)
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)


class StageTimer:
    """Throughput of a stage: wall time of the loop, and the it/s and data-wait fraction
    after the first :data:`WARMUP` steps when there are more than ``2 * WARMUP``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loop_start = time.perf_counter()
        self.warm_start, self.wait_at_warm = self.loop_start, 0.0
        self.steps_done = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step_done(self, wait_seconds: float) -> None:
        """One optimizer step taken; ``wait_seconds``: the prefetcher's data wait so far."""
        self.steps_done += 1
        if self.steps_done == WARMUP:
            self._sync()
            self.warm_start, self.wait_at_warm = time.perf_counter(), wait_seconds

    def finish(self, wait_seconds: float) -> dict[str, Any] | None:
        """The stage's ``timing`` record (``None`` without steps)."""
        self._sync()
        end = time.perf_counter()
        steps_done = self.steps_done
        if not steps_done:
            return None
        # steady state: after the first WARMUP iterations when there are enough of them
        steady = steps_done > 2 * WARMUP
        start, wait_before, counted = ((self.warm_start, self.wait_at_warm, steps_done - WARMUP)
                                       if steady else (self.loop_start, 0.0, steps_done))
        elapsed = max(end - start, 1e-9)
        wait = (wait_seconds - wait_before) / elapsed
        return {"iterations": steps_done, "seconds": end - self.loop_start,
                "it_per_s": counted / elapsed, "data_wait_fraction": wait,
                "excludes_warmup": steady}


class Recorder:
    """The run's log, metrics, environment lines and TensorBoard events (rank 0 writes;
    ``is_main`` false: nothing is written). ``image_interval``: iterations between two
    TensorBoard image snapshots. :attr:`timing` holds each stage's throughput record."""

    def __init__(self, run_dir: Path, is_main: bool, image_interval: int):
        self.run_dir = run_dir
        self.is_main = is_main
        self.image_interval = image_interval
        self.writer: Any = None  # the TensorBoard writer, from :meth:`open_run_files`
        self.log_start = 0  # where this run's lines begin in log.txt (:meth:`open_log`)
        self.timing: dict[str, dict[str, Any]] = {}  # per stage: it/s, data-wait fraction

    def starts_over(self, cfg: TrainConfig) -> bool:
        """Whether this run starts from scratch (no ``--resume``, or nothing to resume):
        then what an earlier run left in the folder is not this run's."""
        return not (cfg.resume and resume_checkpoint(self.run_dir / LAST,
                                                     self.run_dir / LAST_PREV))

    def open_log(self) -> None:
        """``log.txt`` in the run folder (appended to: an earlier run's lines go only once
        this run starts over, :meth:`open_run_files`) plus the console; other ranks log
        warnings only."""
        LOG.setLevel(logging.INFO if self.is_main else logging.WARNING)
        for handler in list(LOG.handlers):
            LOG.removeHandler(handler)
            handler.close()
        if not self.is_main:
            return
        path = self.run_dir / "log.txt"
        self.log_start = path.stat().st_size if path.exists() else 0  # this run's first byte
        log_file = _LogFile(path)
        log_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOG.addHandler(log_file)
        LOG.addHandler(_ConsoleHandler())
        LOG.propagate = False

    def _drop_earlier_log(self) -> None:
        """Keep only this run's lines in ``log.txt`` (those from :attr:`log_start` on)."""
        path = self.run_dir / "log.txt"
        for handler in LOG.handlers:
            handler.flush()
        try:
            with open(path, "r+b") as f:  # the handler appends: its next line goes at the end
                f.seek(self.log_start)
                mine = f.read()
                f.seek(0)
                f.write(mine)
                f.truncate()
        except FileNotFoundError:
            pass
        except OSError as err:
            raise write_error(path, err) from err

    def open_run_files(self, cfg: TrainConfig) -> None:
        """On rank 0: ``config.json``, the TensorBoard writer and, when the run starts over
        (``--overwrite``, or a folder without a checkpoint), none of an earlier run's
        metrics, environment lines, checkpoints (``last.pth`` and its previous generation,
        the stage-best ``*best.pth``: not this run's model) or TensorBoard events."""
        if not self.is_main:
            return
        if self.starts_over(cfg):
            self._drop_earlier_log()
            old = [self.run_dir / n for n in (METRICS, ENVIRONMENT, LAST, LAST_PREV)]
            for path in old + sorted(self.run_dir.glob("*best.pth")):
                path.unlink(missing_ok=True)
            try:
                shutil.rmtree(self.run_dir / "tb")
            except FileNotFoundError:
                pass
            except OSError as err:
                raise write_error(self.run_dir / "tb", err) from err
        write_json_atomic(self.run_dir / "config.json", cfg.to_dict(), sort_keys=True)
        from tensorboardX import SummaryWriter

        # an unbounded queue: a writer thread that died (a full disk) must not block the loop,
        # whose own next write then ends the run in one line
        self.writer = SummaryWriter(str(self.run_dir / "tb"), max_queue=TB_QUEUE)

    def close(self, failing: bool) -> None:
        """Close the TensorBoard writer. One that cannot flush (a full disk) raises only when
        no other error is on its way (``failing`` false)."""
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            writer.close()
        except OSError as err:
            if not failing:
                raise write_error(self.run_dir / "tb", err) from err

    def environment(self, iteration: int, world: int, device: torch.device) -> None:
        """Append this start's :func:`~cogrnet.runtime.environment` (and the iteration it
        starts from) to ``environment.jsonl``, and log it."""
        if not self.is_main:
            return
        env = {"iteration": iteration, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "world": world, **environment(device)}
        path = self.run_dir / ENVIRONMENT
        before = (read_jsonl(path) or [None])[-1] if iteration > 0 else None
        append_line(path, json.dumps(env))
        name = (f"{env['cpu']}, {env['cpu_capability']} kernels" if "cpu" in env
                else env["device_name"])
        LOG.info(f"environment: torch {env['torch']}, {env['threads']} intra-op thread(s), "
                 f"{env['device']} ({name})")
        # keys a start before them did not record (cpu, cpu_capability) are not compared
        changed = [k for k in ("torch", "threads", "device", "cpu", "cpu_capability")
                   if before and k in before and before[k] != env.get(k)]
        if changed:
            LOG.warning("resumed with " + ", ".join(
                f"{k} {env.get(k)} (before: {before[k]})" for k in changed)
                + ": from here the run is not bit-identical to an uninterrupted one")

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar (nothing without a writer)."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def record(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl`` (after a resume, a reader keeps the last row
        of each iteration)."""
        if self.is_main:
            append_line(self.run_dir / METRICS, json.dumps(row))

    def step(self, step: int, stage: Stage, lr: float, out: StepOutput, progress: Any) -> None:
        """A finished step ``step`` (global, counted from 1): the progress bar, its row of
        ``metrics.jsonl`` (scalars averaged over the ranks), TensorBoard and, every
        :data:`LOSS_LOG_INTERVAL` steps, a log line."""
        scalars = average_over_ranks(out.scalars)
        progress.update(1)
        first = next(iter(scalars.values()), None)
        main_loss = out.loss.item() if first is None else first
        progress.set_postfix(loss=f"{main_loss:.4f}", lr=f"{lr:.2g}")
        self.record({"iteration": step, "stage": stage.name, "lr": lr, **scalars})
        if self.writer is None:
            return
        self.writer.add_scalar("train/lr", lr, step)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        if out.snapshot and step % self.image_interval == 0:
            self._write_snapshot(out.snapshot, step)
        if step % LOSS_LOG_INTERVAL == 0:
            LOG.info(f"iteration {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))

    def _write_snapshot(self, snapshot: dict[str, torch.Tensor], step: int) -> None:
        """The middle axial slice of the step's image, target and prediction to TensorBoard."""
        z = snapshot["image"].shape[-1] // 2
        img = snapshot["image"][..., z].float()
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        self.writer.add_image("train/image", img[None].cpu(), step)
        for key in ("target", "prediction"):
            lab = snapshot[key][..., z].float()
            scaled = lab / max(1.0, float(lab.max()))
            self.writer.add_image(f"train/{key}", scaled[None].cpu(), step)

    def stage_timing(self, stage: Stage, timing: dict[str, Any] | None) -> None:
        """Log a stage's throughput (:meth:`StageTimer.finish`) and keep it in
        :attr:`timing` (nothing without steps)."""
        if timing is None:
            return
        steady = timing["excludes_warmup"]
        LOG.info(f"stage {stage.name}: {timing['iterations']} iterations in "
                 f"{timing['seconds']:.1f} s; {timing['it_per_s']:.2f} it/s"
                 f"{' after warm-up' if steady else ''}, data wait "
                 f"{100 * timing['data_wait_fraction']:.1f}% of step time")
        self.timing[stage.name] = timing
