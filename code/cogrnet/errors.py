"""User-facing errors and the CLI wrapper that prints them as one line."""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Sequence


class CoGRNetError(Exception):
    """An error caused by the user's input: its message is one line naming the file or
    argument and the problem. Entry points print it without a traceback."""


class DataError(CoGRNetError):
    """A data file or list is missing, unreadable or inconsistent."""


class ConfigError(CoGRNetError):
    """Command-line arguments or a configuration do not fit together."""


class FolderBusy(CoGRNetError):
    """Another process holds the output folder's lock (:func:`cogrnet.fileio.lock_folder`)."""


class WriteError(CoGRNetError):
    """A file could not be written (a full disk, a quota, an I/O error, a read-only file
    system); the file it would have replaced is kept."""


#: errors of the machine, not of the input: the file system refused a write
WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EIO", "EROFS",
                                                      "EFBIG") if hasattr(errno, n))


def write_error(path: str | Path, err: BaseException) -> WriteError:
    """``cannot write <path>: <why>`` (``No space left on device``) for a failed write of
    ``path``."""
    why = getattr(err, "strerror", None) or (str(err).strip().splitlines() or
                                             [type(err).__name__])[0]
    return WriteError(f"cannot write {path}: {why}")


def folder_path(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path` when it is a folder or does not exist yet; a one-line
    :class:`ConfigError` naming ``what`` when it is a file or a link to a missing folder
    (one made on another machine), which ``mkdir`` would fail on with a bare "File exists"."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{what} {path}: a link to {os.readlink(path)}, which does not "
                          "exist; remove the link or make its target")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: exists and is not a folder")
    return path


def writable_dir(path: str | Path, what: str) -> Path:
    """Create the output folder ``path`` when needed and check that a file can be written in
    it, before any work is done; a one-line :class:`ConfigError` naming ``what`` (the
    argument, e.g. ``--out_dir``) and the folder otherwise."""
    path = folder_path(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{what} {path}: folder is not writable "
                          f"({err.strerror or type(err).__name__})") from None
    return path


def stdout_closed() -> bool:
    """Whether the reader of stdout went away (``| head`` ended): its pipe reports an
    error to ``poll``; ``False`` for a file, a terminal or where that cannot be told."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def run_cli(main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn a :class:`CoGRNetError` (and an ``OSError`` of a failed
    write, :data:`WRITE_ERRNOS`) into ``error: <message>`` on stderr and exit status 2; a
    closed stdout (``| head``) ends it quietly with 141, as a shell tool (a broken pipe of
    anything else is raised). ``--debug`` anywhere in ``argv`` re-raises with the traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rc = main([a for a in args if a != "--debug"])
        return int(rc or 0)
    except CoGRNetError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not stdout_closed():  # another pipe (a worker's, a socket): a real failure
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        return 141
    except OSError as err:  # a write no writer of this project turned into a WriteError
        if err.errno not in WRITE_ERRNOS:
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {write_error(err.filename or 'a file', err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
