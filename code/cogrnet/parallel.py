"""One process-pool runner for per-case jobs (registration, KiTS/LiTS preprocessing): a
failure of one case, even a worker process that dies, becomes that case's failure record
and the other cases complete."""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Hashable, Sequence, TypeVar

T = TypeVar("T")  # a task
R = TypeVar("R")  # a case's result
K = TypeVar("K", bound=Hashable)  # a task's key


def failure_reason(err: BaseException) -> str:
    """``"<ExceptionType>: <first line of the message>"`` (``no detail`` without one)."""
    msg = str(err).splitlines()[0] if str(err).strip() else "no detail"
    return f"{type(err).__name__}: {msg}"


def run_cases(fn: Callable[[T], R], tasks: Sequence[T], workers: int, desc: str,
              key: Callable[[T], K], failure: Callable[[T, str], R], *,
              progress: bool = True, initializer: Callable[[], None] | None = None,
              postfix: Callable[[R], str] | None = None,
              on_result: Callable[[R], None] | None = None) -> dict[K, R]:
    """``fn(task)`` for every task; returns ``key(task) -> result`` in the order of
    ``tasks`` (keys must be unique).

    ``workers <= 1`` or a single task: in this process, one after the other (``initializer``
    is not called). Otherwise a ``spawn`` pool of ``min(workers, len(tasks))`` processes,
    each started with ``initializer``. An exception raised by ``fn`` for a task becomes
    ``failure(task, reason)``, ``reason`` a one-line ``"worker process failed (<Type>:
    <message>)"`` (in this process: ``"<Type>: <message>"``), and the other tasks go on.

    A worker process that dies (killed, out of memory, ``os._exit``) breaks the pool: every
    task it had not finished is then run again, each in a fresh one-process pool of its own
    (``min(workers, left)`` of them at a time), so only the task that kills its process
    again fails (with ``BrokenProcessPool`` in its reason) and the others complete. A
    task is thus run twice only when a pool broke before it finished; its result counts
    once. ``postfix(result)`` sets the tqdm bar's postfix (``desc``, unit ``case``;
    no bar unless ``progress``), ``on_result(result)`` sees each result as it arrives.
    """
    from tqdm import tqdm

    results: dict[K, R] = {}
    bar = tqdm(total=len(tasks), desc=desc, unit="case", disable=not progress,
               dynamic_ncols=True)

    def record(task: T, result: R) -> None:
        results[key(task)] = result
        bar.update(1)
        if postfix is not None:
            bar.set_postfix_str(postfix(result), refresh=False)
        if on_result is not None:
            on_result(result)

    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                try:
                    result = fn(task)
                except Exception as err:  # noqa: BLE001 - one case must not stop the others
                    result = failure(task, failure_reason(err))
                record(task, result)
        else:
            left = _run_pool(fn, tasks, min(workers, len(tasks)), initializer, failure, record)
            if left:
                _run_isolated(fn, left, min(workers, len(left)), initializer, failure, record)
    finally:
        bar.close()
    return {key(task): results[key(task)] for task in tasks}


def _outcome(fut: Future, task: T, failure: Callable[[T, str], R]) -> R:
    try:
        return fut.result()
    except Exception as err:  # noqa: BLE001 - e.g. the case's own error, an unpicklable result
        return failure(task, f"worker process failed ({failure_reason(err)})")


def _run_pool(fn: Callable[[T], R], tasks: Sequence[T], workers: int,
              initializer: Callable[[], None] | None, failure: Callable[[T, str], R],
              record: Callable[[T, R], None]) -> list[T]:
    """All ``tasks`` in one pool; returns those left unfinished by a broken pool."""
    left: list[int] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=initializer) as pool:
        futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        for fut in as_completed(futures):
            task = tasks[futures[fut]]
            if isinstance(fut.exception(), BrokenProcessPool):
                left.append(futures[fut])
            else:
                record(task, _outcome(fut, task, failure))
    return [tasks[i] for i in sorted(left)]


def _run_isolated(fn: Callable[[T], R], tasks: Sequence[T], workers: int,
                  initializer: Callable[[], None] | None, failure: Callable[[T, str], R],
                  record: Callable[[T, R], None]) -> None:
    """Each task in a fresh one-process pool, ``workers`` at a time (a dying process takes
    only its own task with it)."""
    queue = list(tasks)
    running: dict[Future, tuple[T, ProcessPoolExecutor]] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                task = queue.pop(0)
                pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                           initializer=initializer)
                running[pool.submit(fn, task)] = (task, pool)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in [f for f in running if f in done]:  # submission order
                task, pool = running.pop(fut)
                pool.shutdown()
                record(task, _outcome(fut, task, failure))
    finally:
        for _, pool in running.values():
            pool.shutdown(cancel_futures=True)
