"""Files written whole or not at all, and the JSON-lines records runs append to."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; renamed over ``path`` when
    the block ends, removed when it raises. A reader, or a crash at any moment, sees the old
    file or the new one, never half of one. ``suffix`` keeps an extension that a writer
    reads the format from (e.g. ``".tmp.nii.gz"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a binary file at an :func:`atomic_path`, fsync'd before the
    rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


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
