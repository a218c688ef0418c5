"""One process-pool runner for per-case jobs (registration, KiTS/LiTS preprocessing): a
failure of one case, even a worker process that dies, becomes that case's failure record
and the other cases complete."""
from __future__ import annotations

import multiprocessing as mp
import signal
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import connection
from multiprocessing.connection import Connection
from typing import Any, Callable, Hashable, Sequence, TypeVar

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
    task it had not finished is then run again, each in a fresh process of its own
    (``min(workers, left)`` of them at a time), so only the task that kills its process
    again fails, its reason saying how (``"worker process died (killed by SIGKILL)"``), and
    the others complete. A task is thus run twice only when a pool broke before it
    finished; its result counts once. ``postfix(result)`` sets the tqdm bar's postfix (``desc``, unit ``case``;
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


def death_reason(exitcode: int | None) -> str:
    """Why a worker process ended without a result: ``"killed by SIGKILL"`` (the signal's
    name; out of memory is usually SIGKILL) or ``"exit code 3"``."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _isolated_call(conn: Connection, fn: Callable[[T], R], task: T,
                   initializer: Callable[[], None] | None) -> None:
    """In a worker process of its own: ``("ok", fn(task))`` or ``("error", reason)`` sent
    through ``conn``."""
    try:
        if initializer is not None:
            initializer()
        out: tuple[str, Any] = ("ok", fn(task))
    except Exception as err:  # noqa: BLE001 - reported as the case's failure
        out = ("error", failure_reason(err))
    try:
        conn.send(out)  # pickled before a byte is written: a failure here sends nothing
    except Exception as err:  # noqa: BLE001 - e.g. an unpicklable result
        conn.send(("error", failure_reason(err)))
    conn.close()


def _run_isolated(fn: Callable[[T], R], tasks: Sequence[T], workers: int,
                  initializer: Callable[[], None] | None, failure: Callable[[T, str], R],
                  record: Callable[[T, R], None]) -> None:
    """Each task in a fresh worker process of its own, ``workers`` at a time: a dying
    process takes only its own task with it, whose failure then says how it died
    (:func:`death_reason`)."""
    ctx = mp.get_context("spawn")
    queue = list(tasks)
    running: dict[Connection, tuple[T, Any]] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                task = queue.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_isolated_call, args=(send, fn, task, initializer))
                proc.start()
                send.close()  # the child holds the only write end: its death is an EOF
                running[receive] = (task, proc)
            ready = connection.wait(list(running))
            for conn in [c for c in running if c in ready]:  # submission order
                task, proc = running.pop(conn)
                try:
                    status, value = conn.recv()
                except EOFError:  # the process ended without a word
                    status, value = "died", None
                conn.close()
                proc.join()
                if status == "ok":
                    record(task, value)
                elif status == "error":
                    record(task, failure(task, f"worker process failed ({value})"))
                else:
                    record(task, failure(task, f"worker process died ({death_reason(proc.exitcode)})"))
    finally:
        for conn, (_, proc) in running.items():
            proc.terminate()
            proc.join()
            conn.close()
