"""Files written whole or not at all, the JSON-lines records runs append to, and the lock
that gives an output folder one writer."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable, Iterator

from .errors import ConfigError, FolderBusy, folder_path, write_error, writable_dir

try:  # POSIX; elsewhere (Windows) folders are not locked
    import fcntl
except ImportError:  # pragma: no cover - not on the supported platforms' CI
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".cogrnet.lock"
#: the temporary names :func:`atomic_path` gives: ``.<name>.<pid>.<8 hex><suffix>``
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp")


def _temporary(path: Path, suffix: str) -> Path:
    """A fresh temporary name beside ``path`` (the :data:`_TEMPORARY` pattern)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` a hard link to ``src``, or a copy where the file system has no hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp",
                previous: str | Path | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; renamed over ``path`` when
    the block ends, removed when it raises. A reader, or a crash at any moment, sees the old
    file or the new one, never half of one. ``suffix`` keeps an extension that a writer
    reads the format from (e.g. ``".tmp.nii.gz"``). ``previous``: the file ``path`` held
    is first linked (or copied) there (the generation before, kept); ``path`` itself is
    never missing, a crash between the steps leaves both generations readable. An
    ``OSError`` of the block (a full disk, ...) becomes a :class:`~cogrnet.errors.WriteError` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, suffix)
    kept = None if previous is None else _temporary(Path(previous), ".tmp")
    try:
        yield tmp
        if kept is not None and path.exists():
            _link_or_copy(path, kept)  # ``path`` stays in place: no moment without it
            os.replace(kept, previous)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if kept is not None:
            kept.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None],
                 previous: str | Path | None = None) -> Path:
    """Call ``write(f)`` on a binary file at an :func:`atomic_path` (``previous``: see
    there), fsync'd before the rename."""
    with atomic_path(path, previous=previous) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` (a JSON-lines record), on a line of its own
    also after a torn last line (a write cut off by a full disk or a kill: what
    :func:`read_jsonl` skips); a failed write is a :class:`~cogrnet.errors.WriteError`
    naming ``path``."""
    try:
        with open(path, "a+b") as f:
            torn = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
            f.write((("\n" if torn else "") + line + "\n").encode("utf-8"))
    except OSError as err:
        raise write_error(path, err) from err


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) at ``path``, written by :func:`atomic_write`."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def write_json_atomic(path: str | Path, obj: Any, sort_keys: bool = False) -> Path:
    """``obj`` as indented JSON at ``path``, written by :func:`atomic_write`."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n"  # a bad object fails here
    return write_text_atomic(path, text)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (``metrics.jsonl``, ``environment.jsonl``), in
    order; lines that are not a JSON object (the torn last line of a killed writer) are
    skipped. Empty when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


@contextlib.contextmanager
def removed_if_left_empty(folders: list[Path]) -> Iterator[None]:
    """On an exception inside the block, remove each of ``folders`` that did not exist
    before the block and is still empty (with the empty parents it made), so that a
    failed command leaves no empty output folder behind; the exception goes on."""
    new = [Path(f) for f in folders if not Path(f).exists()]
    made = [[p for p in (f, *f.parents) if not p.exists()] for f in new]
    try:
        yield
    except BaseException:
        for chain in made:
            for path in chain:  # deepest first
                with contextlib.suppress(OSError):
                    path.rmdir()  # only when empty
        raise


def _lock_holder(handle: IO) -> int | None:
    """The process holding a ``flock`` on the file open as ``handle``, from ``/proc/locks``
    (Linux); ``None`` where that cannot be told."""
    st = os.fstat(handle.fileno())
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    by_inode = []
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 5835 fe:00:2146538 0 EOF"
        parts = line.split()
        if len(parts) < 6 or parts[1] != "FLOCK":  # "->": a waiter, not the holder
            continue
        try:
            major, minor, inode = parts[5].split(":")
            pid, dev = int(parts[4]), (int(major, 16), int(minor, 16))
        except ValueError:
            continue
        if int(inode) == st.st_ino:
            if dev == (os.major(st.st_dev), os.minor(st.st_dev)):
                return pid
            by_inode.append(pid)  # overlay file systems report the lower device
    return by_inode[0] if len(set(by_inode)) == 1 else None


def lock_holder(folder: str | Path, name: str = LOCK_NAME) -> int | None:
    """The process holding the lock ``folder/name`` of :func:`lock_folder`, read from
    ``/proc/locks`` without taking the lock; ``None`` when it is free, or where that
    cannot be told."""
    path = Path(folder) / name
    try:
        with open(path, "rb") as handle:
            return _lock_holder(handle)
    except OSError:
        return None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` that a killed writer left directly
    in ``folder`` (those of a process still running are kept); returns them. Call it only
    while holding the folder's :func:`lock_folder`."""
    removed = []
    for path in Path(folder).iterdir():
        match = _TEMPORARY.match(path.name)
        if not match or not path.is_file():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # that process runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class FolderLock:
    """An exclusive lock on an output folder (:func:`lock_folder`), held until
    :meth:`release` (or the ``with`` block ends, or the process ends, however it ends)."""

    def __init__(self, folder: Path, handle: IO):
        self.folder = folder
        self._handle: IO | None = handle

    def release(self) -> None:
        """Let another process have the folder (again a no-op)."""
        if self._handle is not None:
            self._handle.close()  # closing the last descriptor drops the flock
            self._handle = None

    def __enter__(self) -> Path:
        return self.folder

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_folder(folder: str | Path, what: str, name: str = LOCK_NAME) -> FolderLock:
    """Make ``folder`` (the output of ``what``, e.g. ``--out_dir``) this process's alone:
    an exclusive ``flock`` on ``folder/name``, which the kernel drops when the process ends
    (a killed run leaves no stale lock). Another process holding it: a one-line
    :class:`~cogrnet.errors.FolderBusy` naming the folder and that process, before anything
    is written. Once held: the folder is checked writable and the temporary files a killed
    writer left in it are removed. Lock files of other ``name`` s are independent (a
    benchmark row's lock around its own ``train.py``'s)."""
    folder = folder_path(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / name, "a+b")  # created once, never written
    except OSError as err:
        raise ConfigError(f"{what} {folder}: folder is not writable "
                          f"({err.strerror or type(err).__name__})") from None
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = _lock_holder(handle)
        handle.close()
        holder = f"process {pid}" if pid is not None else "another process"
        raise FolderBusy(f"{what} {folder}: in use by {holder} (it holds {folder / name}); "
                         "wait for it to end or stop it") from None
    lock = FolderLock(folder, handle)
    try:
        writable_dir(folder, what)
        remove_stale_temporaries(folder)
    except BaseException:
        lock.release()
        raise
    return lock
