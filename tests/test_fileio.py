"""Atomic writers: the old file survives a failed write, no temporary file is left, and the
new file gets the usual permissions."""
from __future__ import annotations

import json
import os

import pytest

from cogrnet.errors import WriteError
from cogrnet.fileio import append_line, atomic_path, atomic_write, read_jsonl, write_json_atomic


def test_json_written_whole_with_umask_permissions(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "a.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"old": True})

    def half_then_fail(f):
        f.write(b'{"new": ')
        raise OSError("disk full")

    with pytest.raises(WriteError, match=f"^cannot write {path}: disk full$"):
        atomic_write(path, half_then_fail)
    with pytest.raises(TypeError):  # not JSON: fails before anything is written
        write_json_atomic(path, {"x": object()})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_path_keeps_the_suffix_and_renames_on_success(tmp_path):
    path = tmp_path / "img.nii.gz"
    with atomic_path(path, suffix=".tmp.nii.gz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.nii.gz")
        assert not path.exists()
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x" and not tmp.exists()


def test_atomic_path_with_previous_never_leaves_the_path_missing(tmp_path, monkeypatch):
    """Keeping the generation before (``last_prev.pth``) must not open a moment without
    ``last.pth``: a kill -9 there would leave a run folder with no last checkpoint."""
    import cogrnet.fileio as fileio

    path, previous = tmp_path / "last.pth", tmp_path / "last_prev.pth"
    path.write_bytes(b"old")
    seen = []
    real = os.replace

    def replace(src, dst):
        seen.append(path.exists())  # what a kill at this step would leave behind
        real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    with atomic_path(path, previous=previous) as tmp:
        tmp.write_bytes(b"new")
    assert seen == [True, True]
    assert path.read_bytes() == b"new" and previous.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth", "last_prev.pth"]
    with pytest.raises(RuntimeError), atomic_path(path, previous=previous) as tmp:
        tmp.write_bytes(b"never")
        raise RuntimeError
    assert path.read_bytes() == b"new" and previous.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth", "last_prev.pth"]


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    """A killed writer leaves half a line at the end: the records before it are read, the
    half line and anything that is not an object are skipped, a missing file is empty."""
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []
    path.write_text('{"iteration": 1}\n[1, 2]\n\n{"iteration": 2}\n{"iterat')
    assert read_jsonl(path) == [{"iteration": 1}, {"iteration": 2}]


def test_append_line_starts_a_line_of_its_own_after_a_torn_one(tmp_path):
    """A run resumed after a write was cut off (full disk, kill) appends its records after
    the torn half line, not onto it (where the new record would be unreadable too)."""
    path = tmp_path / "metrics.jsonl"
    append_line(path, '{"iteration": 1}')
    with open(path, "a") as f:
        f.write('{"iterat')
    append_line(path, '{"iteration": 2}')
    assert read_jsonl(path) == [{"iteration": 1}, {"iteration": 2}]
