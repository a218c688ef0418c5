"""Running a benchmark's pending (row, seed) runs: train (resuming), test, record the
result in the run folder, one process per row (:func:`run_row`, :func:`run_pending`)."""
from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cogrnet.benchmark.commands import (registration_command, run_command, short_command,
                                        teacher_test_command, thread_env, uses_coarse)
from cogrnet.benchmark.results import read_result, read_summary, run_threads, with_run_details
from cogrnet.errors import ConfigError, DataError, FolderBusy
from cogrnet.evaluation.metrics import METRIC_NAMES
from cogrnet.fileio import lock_folder, write_json_atomic
from cogrnet.methods.registry import has_teacher
from cogrnet.presets import REPO_ROOT

ROW_LOCK = ".benchmark.lock"  # a row's lock, taken around its own train.py's and test.py's


TRAINED = "bench_train.json"  # a row's finished training: its command, wall time, resumed


def _trained(path: Path, train: list[str]) -> dict[str, Any] | None:
    """The record of a finished training of ``train`` (:data:`TRAINED`); ``None`` when
    there is none (or it is unreadable, or of another command: then it trains again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("train_command") == short_command(train)
    return record if ok and isinstance(record.get("seconds"), (int, float)) else None


def run_row(exp: str, train: list[str], test: list[str], run_dir: Path, seed: int,
            log: Path, env: dict[str, str] | None = None,
            test_teacher: bool = False) -> dict[str, Any]:
    """Train (resuming from ``last.pth`` if there is one) and test one (row, seed), and with
    ``test_teacher`` test its EMA teacher too; its result, also written to
    ``run_dir/bench_result.json``.

    The row is this process's alone (:data:`ROW_LOCK`; held by another benchmark.py: a
    one-line :class:`~cogrnet.errors.FolderBusy`), and a row that process finished
    meanwhile is read, not run again. Interrupted anywhere, the same call finishes the row:
    a finished training (:data:`TRAINED`) is not run again, so the row keeps its wall time,
    and only a test that completed now gives a result."""
    with lock_folder(run_dir, f"row {exp}, run folder", name=ROW_LOCK):
        done = run_dir / "bench_result.json"
        if done.exists():
            print(f"{exp}: finished by another process", flush=True)
            return with_run_details(read_result(done))
        trained = _trained(run_dir / TRAINED, train)
        if trained is None:
            print(f"{exp}: training", flush=True)
            resume = ["--resume"] if (run_dir / "last.pth").exists() else []
            trained = {"train_command": short_command(train),
                       "seconds": run_command(train + resume, log, env),
                       "resumed": bool(resume)}
            write_json_atomic(run_dir / TRAINED, trained)
        else:
            print(f"{exp}: trained earlier", flush=True)
        for folder in ("bench_test", "bench_test_ema"):  # only this call's tests count
            (run_dir / folder / "summary.json").unlink(missing_ok=True)
        print(f"{exp}: testing", flush=True)
        seconds = trained["seconds"] + run_command(test, log, env)
        if test_teacher:
            print(f"{exp}: testing the teacher", flush=True)
            run_command(teacher_test_command(test), log, env)  # not in the wall time: a diagnostic
        return _write_result(train, test, run_dir, seed, env, seconds,
                             bool(trained.get("resumed")))


def _write_result(train: list[str], test: list[str], run_dir: Path, seed: int,
                  env: dict[str, str] | None, seconds: float, resumed: bool) -> dict[str, Any]:
    """The result of a tested (row, seed) (:func:`run_row`), written to
    ``run_dir/bench_result.json``."""
    summary = read_summary(run_dir / "bench_test")
    if summary is None:
        raise DataError(f"{run_dir / 'bench_test'}: the scoring wrote no summary.json")
    result = {"seed": seed, "run_dir": str(run_dir), "seconds": seconds,
              "date": time.strftime("%Y-%m-%d"), "resumed": resumed,
              "threads": run_threads(run_dir) or (env or os.environ).get("OMP_NUM_THREADS",
                                                                         "all cores"),
              "mean": {m: summary["mean"][m] for m in METRIC_NAMES},
              "train_command": short_command(train), "test_command": short_command(test)}
    write_json_atomic(run_dir / "bench_result.json", with_run_details(result))
    return result


def run_pending(pending: list[tuple], seeds: list[int], jobs: int, write: Any, out: Path,
                test_teacher: bool = False) -> None:
    """Run the pending (row, seed) runs, ``jobs`` at a time, first seed of every row first;
    after each finished run the table is rewritten (``write``), so a later failure or a
    stopped session keeps it. A failed run is reported and the others go on.
    ``test_teacher``: rows of a teacher method are also scored with the teacher."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be at least 1")
    order = sorted(range(len(pending)), key=lambda i: (seeds.index(pending[i][1]), i))
    threads = None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
    lock = threading.Lock()
    failures: list[str] = []
    busy: list[str] = []

    def one(i: int) -> None:
        entry, seed, exp, train, test, run_dir = pending[i]
        try:
            run_row(exp, train, test, run_dir, seed, out / "logs" / f"{exp}.log",
                    thread_env(threads),
                    test_teacher and has_teacher(entry["method"]))
        except FolderBusy as err:  # another benchmark.py runs it: never the same row twice
            print(f"{exp}: skipped: {err}", flush=True)
            busy.append(exp)
            return
        except ConfigError as err:
            if jobs == 1:
                raise
            print(f"{exp}: failed: {err}", flush=True)
            failures.append(exp)
            return
        with lock:  # write() reads every finished run again, this one included
            write()

    if jobs == 1:
        for i in order:
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, order))
    if busy:
        print(f"{len(busy)} run(s) left to the process(es) running them: {', '.join(busy)}; "
              "the same command again, once they have finished, writes the whole table",
              flush=True)
    if failures:
        raise ConfigError(f"{len(failures)} run(s) failed: {', '.join(failures)} (logs in "
                          f"{out / 'logs'}); the table holds the others")


def ensure_registration(spec: dict[str, Any], rows: list[dict[str, Any]], out: Path,
                        run: bool) -> None:
    """Record the spec's registration command in it, and (``run``) make the coarse labels
    once when some of ``rows`` trains on them and they are not there yet."""
    reg = spec.get("registration")
    if not reg:
        return
    reg_cmd = registration_command(reg)
    reg["command"] = short_command(reg_cmd)
    made = (REPO_ROOT / reg["out_dir"] / "summary.json").exists()
    if run and uses_coarse(spec, rows) and not made:
        print(f"registration -> {reg['out_dir']}", flush=True)
        run_command(reg_cmd, out / "logs" / "registration.log")
