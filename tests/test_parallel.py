"""cogrnet.parallel.run_cases on tiny synthetic tasks: results in task order, one case's
exception or dead worker fails only that case.

A worker that dies (``os._exit``) breaks the whole pool: every case it had not finished is
then run again, each in a fresh process of its own, so only the case that kills its process
again gets a failure record (saying how its process ended) and the others complete.
Checked against a deliberately broken runner (one that recorded the pool's
``BrokenProcessPool`` for every pending case instead of re-running them):
``test_a_dead_worker_fails_only_its_case`` then failed: the cases
still running or queued when case 2 killed its worker were failed too.
"""
from __future__ import annotations

import os
import time

import pytest

from cogrnet.parallel import failure_reason, run_cases

TASKS = [(i, 0.1 * (5 - i)) for i in range(5)]  # later tasks finish first in a pool


def square(task: tuple[int, float]) -> dict:
    i, delay = task
    if i == 2 and os.environ.get("_PARALLEL_TEST") == "die":
        os._exit(3)  # at once, while other cases are running or queued
    time.sleep(delay)
    if i == 2 and os.environ.get("_PARALLEL_TEST") == "raise":
        raise ValueError("boom\nsecond line")
    return {"id": i, "status": "ok", "value": i * i}


def failed(task: tuple[int, float], reason: str) -> dict:
    return {"id": task[0], "status": "failed", "reason": f"case {task[0]}: {reason}"}


def run(workers: int) -> dict:
    return run_cases(square, TASKS, workers, "test", key=lambda t: t[0], failure=failed,
                     progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_task_order(workers, monkeypatch):
    monkeypatch.delenv("_PARALLEL_TEST", raising=False)
    seen: list[int] = []
    out = run_cases(square, TASKS, workers, "test", key=lambda t: t[0], failure=failed,
                    progress=False, postfix=lambda r: str(r["id"]),
                    on_result=lambda r: seen.append(r["id"]))
    assert list(out) == [0, 1, 2, 3, 4]
    assert [r["value"] for r in out.values()] == [0, 1, 4, 9, 16]
    assert sorted(seen) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_exception_fails_only_its_case(workers, monkeypatch):
    monkeypatch.setenv("_PARALLEL_TEST", "raise")  # spawned workers inherit the environment
    out = run(workers)
    assert list(out) == [0, 1, 2, 3, 4]
    assert [r["status"] for r in out.values()] == ["ok", "ok", "failed", "ok", "ok"]
    reason = out[2]["reason"]
    assert reason.startswith("case 2: ") and "ValueError: boom" in reason
    assert "\n" not in reason and "second line" not in reason
    assert ("worker process failed" in reason) == (workers > 1)


def test_a_dead_worker_fails_only_its_case(monkeypatch):
    monkeypatch.setenv("_PARALLEL_TEST", "die")
    out = run(2)
    assert list(out) == [0, 1, 2, 3, 4]
    assert [r["status"] for r in out.values()] == ["ok", "ok", "failed", "ok", "ok"]
    assert [out[i]["value"] for i in (0, 1, 3, 4)] == [0, 1, 9, 16]
    assert out[2]["reason"] == "case 2: worker process died (exit code 3)"
    assert "\n" not in out[2]["reason"]


def test_failure_reason_is_one_line():
    assert failure_reason(RuntimeError("a\nb")) == "RuntimeError: a"
    assert failure_reason(KeyError()) == "KeyError: no detail"
