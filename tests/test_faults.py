"""Faults of the machine, each done for real on tiny phantoms: a second process on a run
folder, a full disk, a damaged checkpoint, a dead worker or data thread, a benchmark table
cut off mid-row. Each ends in one line, keeps every file that was good, and the same
command (or ``--resume``) afterwards gives what an uninterrupted run gives.

Run against the code before issue 28 (this file on the tree before it, the new names
spelled out), 8 of the 10 tests failed, each on its fault: the second ``train.py`` trained
into the first one's folder, registration and test.py wrote into a folder in use, the full
disk ended in ``torch.save``'s ``RuntimeError: [enforce fail at inline_container.cc:672]``
traceback, the damaged ``last.pth`` was refused without a previous generation to offer (and
the bit-flipped one loads with ``torch.load`` alone), the failing data thread ended in a
traceback, the dying worker's reason named ``BrokenProcessPool`` and not the signal, and
benchmark.py ran a row another process held. The two that passed hold behaviour kept from
before: a killed worker's cases run again and finish, and a registration killed and started
again writes the same files.
"""
from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import CODE
from dying_worker import VICTIM, killed_on_victim
from cogrnet.benchmark import ROW_LOCK, TRAINED, row_commands
from cogrnet.data.samplers import PatchBatcher
from cogrnet.fileio import LOCK_NAME
from cogrnet.checkpoints import atomic_torch_save, load_checkpoint, make_checkpoint
from test_bad_inputs import REGISTRATION, TEST, TRAIN, assert_one_line_error, call, tree_digest
from test_training import ENV, _assert_same, _cli, _wait_for, _weights

# two-stage CoGRNet: pre-training checkpoints hold the student and its optimizer, the
# self-training ones the teacher too (a larger last.pth from iteration 3 on)
ARGS = ["--label_source", "full", "--labelnum", "2", "--pre_max_iteration", "2",
        "--self_max_iteration", "3", "--save_interval", "1", "--val_list", "none"]
TOTAL = 5


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def _error_line(stderr: str) -> str:
    """The one line of a failed command: no traceback, nothing else on stderr."""
    text = stderr.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, stderr
    return text


@pytest.fixture(scope="module")
def reference(phantom_root, tmp_path_factory) -> Path:
    """An uninterrupted run (one thread): the folder ``ref`` of ``last.pth`` (iteration 5),
    ``last_prev.pth`` (4), ``pretrain_best.pth``, ``best.pth``."""
    out = tmp_path_factory.mktemp("ref")
    subprocess.run(_cli(phantom_root, out, "ref", *ARGS), env=ENV, check=True,
                   capture_output=True, timeout=300)
    return out / "ref"


# ---------------------------------------------------------------- one writer per folder


def test_a_second_run_on_a_folder_exits_at_once_and_touches_nothing(phantom_root, reference,
                                                                     tmp_path):
    args = _cli(phantom_root, tmp_path, "f1", *ARGS)
    run = tmp_path / "f1"
    first = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for(run / "config.json", first)  # written after the lock is taken
        first.send_signal(signal.SIGSTOP)  # holds the lock, writes nothing meanwhile
        before = tree_digest(run)
        for extra in (["--resume"], []):
            t0 = time.perf_counter()
            second = subprocess.run(args + extra, env=ENV, capture_output=True, text=True,
                                    timeout=120)
            assert second.returncode == 2 and time.perf_counter() - t0 < 60
            line = _error_line(second.stderr)
            assert str(run) in line and f"in use by process {first.pid}" in line, line
            assert tree_digest(run) == before  # not even config.json, log.txt or tb/
    finally:
        first.kill()  # SIGKILL reaches a stopped process too
        first.wait(timeout=60)
    # the lock died with the killed run: --resume continues (a temporary file of a save
    # the kill cut short is removed) and ends where an uninterrupted run ends
    done = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _temporaries(run) == []
    _assert_same(_weights(reference / "last.pth"), _weights(run / "last.pth"))


def _holder(folder: Path, name: str = LOCK_NAME) -> subprocess.Popen:
    """Another process holding ``folder``'s lock ``name`` until its stdin closes."""
    code = ("import sys; from cogrnet.fileio import lock_folder; "
            "lock = lock_folder(sys.argv[1], 'x', sys.argv[2]); print('held', flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=60)


def test_registration_and_test_refuse_a_folder_in_use(phantom_root, reference, tmp_path):
    commands = {
        "registration": (REGISTRATION, ["--dataset", "phantom", "--root_path", phantom_root,
                                        "--labelnum", "2", "--no_progress"]),
        "test": (TEST, ["--dataset", "phantom", "--root_path", phantom_root, "--checkpoint",
                        reference / "last.pth", "--overlap", "0.5", "--device", "cpu",
                        "--no_progress"]),
    }
    for name, (script, argv) in commands.items():
        out = tmp_path / name
        holder = _holder(out)
        try:
            before = tree_digest(out)
            line = assert_one_line_error(call(script, argv + ["--out_dir", out]), "--out_dir",
                                         str(out), f"in use by process {holder.pid}")
            assert tree_digest(out) == before, line
        finally:
            _release(holder)
        rc, _, err = call(script, argv + ["--out_dir", out])  # free again: it runs
        assert rc == 0, err
        assert (out / "summary.json").is_file()


# ----------------------------------------------------------------------------- full disk


def _fsize_limit(limit: int):
    def preexec() -> None:  # the child's files may not grow past ``limit`` bytes (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.fixture(params=["fsize", "tmpfs"])
def small_disk(request, reference, tmp_path):
    """``(out_root, preexec, free, why)``: an output place where the first self-training
    ``last.pth`` (student, teacher, optimizer) cannot be written but the pre-training ones
    can: a file-size limit (``RLIMIT_FSIZE``, anyone) or a tmpfs that fills up (root);
    ``free()`` lifts the limit."""
    small = (reference / "pretrain_best.pth").stat().st_size  # the student alone
    big = (reference / "last.pth").stat().st_size  # student, teacher, momentum: 3 x small
    if request.param == "fsize":
        yield tmp_path, _fsize_limit((2 * small + big) // 2), None, "File too large"
        return
    # pre-training's peak: pretrain_best, last, last_prev and a save's temporary (2 x small
    # each); the first self-training save needs room for a 3 x small temporary on top
    disk = tmp_path / "disk"
    disk.mkdir()
    size = (small + 3 * 2 * small + small + 2 * 2 * small + big) // 2 + 256 * 1024
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size // 1024}k", "tmpfs",
                              str(disk)], capture_output=True)
    if os.geteuid() != 0 or mounted.returncode != 0:
        pytest.skip("a tmpfs needs root (the fsize case runs everywhere)")
    try:
        yield disk, None, lambda: subprocess.run(
            ["mount", "-o", "remount,size=256m", str(disk)], check=True), \
            "No space left on device"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_ends_the_run_in_one_line_and_resume_finishes_it(phantom_root, reference,
                                                                    small_disk):
    out, preexec, free, why = small_disk
    args = _cli(phantom_root, out, "disk", *ARGS)
    run = out / "disk"
    full = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec)
    assert full.returncode == 2, full.stderr[-2000:]
    assert _error_line(full.stderr) == f"error: cannot write {run / 'last.pth'}: {why}"
    assert _temporaries(run) == []
    # everything written before is intact and loads: the end of pre-training
    assert load_checkpoint(run / "last.pth")["stage"] == "pre"
    assert load_checkpoint(run / "last_prev.pth")["iteration"] == 1
    assert load_checkpoint(run / "pretrain_best.pth")["iteration"] == 2
    assert json.loads((run / "config.json").read_text())["exp"] == "disk"
    if free is not None:  # the short disk was announced before the first step
        assert "MiB free for" in (run / "log.txt").read_text()
        free()
    done = subprocess.run(args + ["--resume"], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same(_weights(reference / "last.pth"), _weights(run / "last.pth"))


# ------------------------------------------------------------------ checkpoint integrity


def _flip_a_weight_bit(data: bytes) -> bytes:
    """``data`` (a checkpoint) with the lowest bit of one byte in the middle of its largest
    tensor flipped: the zip and the pickle stay valid."""
    info = max(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:
                                                    info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def test_a_damaged_last_pth_is_refused_and_the_previous_one_continues(phantom_root, reference,
                                                                      tmp_path):
    run = tmp_path / "ref"
    shutil.copytree(reference, run)
    last, prev = run / "last.pth", run / "last_prev.pth"
    good = last.read_bytes()
    flipped = _flip_a_weight_bit(good)
    # the flipped bit lies in a weight: the loader before the checksum took this file
    assert torch.load(io.BytesIO(flipped), weights_only=True)["iteration"] == TOTAL
    argv = _cli(phantom_root, tmp_path, "ref", *ARGS, "--resume")[2:]
    for damaged, message in ((good[:len(good) // 2], "corrupt or unreadable checkpoint"),
                             (flipped, "does not match the checksum")):
        last.write_bytes(damaged)
        before = tree_digest(run)
        assert_one_line_error(call(TRAIN, argv), str(last), message, str(prev),
                              f"(iteration {TOTAL - 1}) is good", "move last.pth away")
        assert tree_digest(run) == before
    last.unlink()  # as the message says: --resume continues from last_prev.pth
    done = subprocess.run(_cli(phantom_root, tmp_path, "ref", *ARGS, "--resume"), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "continuing from the generation before, last_prev.pth" in (run / "log.txt").read_text()
    _assert_same(_weights(reference / "last.pth"), _weights(last))


def test_a_last_pth_without_a_run_state_is_refused_in_one_line(phantom_root, reference,
                                                                 tmp_path):
    """A checkpoint that holds weights but not a run's state (an exported or hand-made one
    put in place of ``last.pth``) is refused naming the file and what it lacks, before the
    run folder changes; a teacher stage's checkpoint without the teacher likewise."""
    run = tmp_path / "ref"
    shutil.copytree(reference, run)
    last = run / "last.pth"
    ckpt = load_checkpoint(last)
    argv = _cli(phantom_root, tmp_path, "ref", *ARGS, "--resume")[2:]
    for dropped, message in (("optimizer", "lacks optimizer"),
                             ("ema", "holds no teacher (ema) weights")):
        fields = {k: ckpt[k] for k in ("config", "iteration", "stage", "rng", "extra")}
        kept = {"optimizer_state": ckpt["optimizer"], "ema_state": ckpt["ema"]}
        kept[f"{dropped}_state"] = None
        atomic_torch_save(make_checkpoint(ckpt["model"], **fields, **kept), last)
        before = tree_digest(run)
        assert_one_line_error(call(TRAIN, argv), str(last), message)
        assert tree_digest(run) == before
    fields = {k: ckpt[k] for k in ("config", "iteration", "rng", "extra")}
    atomic_torch_save(make_checkpoint(ckpt["model"], stage="bogus", ema_state=ckpt["ema"],
                                      optimizer_state=ckpt["optimizer"], **fields), last)
    before = tree_digest(run)
    assert_one_line_error(call(TRAIN, argv), str(last), "stage 'bogus' is not a stage of "
                          "method cogrnet")
    assert tree_digest(run) == before


# ------------------------------------------------------------------------- dead workers


def test_a_failing_data_thread_ends_the_run_in_one_line(phantom_root, tmp_path, monkeypatch):
    real = PatchBatcher.batch

    def batch(self, iteration):
        if iteration == 3:
            raise MemoryError("no room for the patches")
        return real(self, iteration)

    monkeypatch.setattr(PatchBatcher, "batch", batch)
    argv = _cli(phantom_root, tmp_path, "threads", *ARGS)[2:]
    assert_one_line_error(call(TRAIN, argv), "the batch of iteration 4 could not be built in "
                          "a data-loading thread (MemoryError: no room for the patches)",
                          str(tmp_path / "threads" / "last.pth"))
    assert load_checkpoint(tmp_path / "threads" / "last.pth")["iteration"] == 3


def _spawned_workers(parent: int) -> list[int]:
    """The ``multiprocessing`` spawn workers among ``parent``'s children (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def _same_coarse_labels(out: Path, reference: Path) -> None:
    for h5 in sorted(reference.glob("*.h5")):
        assert (out / h5.name).read_bytes() == h5.read_bytes(), h5.name


def test_a_killed_registration_worker_is_retried_and_every_case_finishes(
        phantom_root, phantom_coarse, tmp_path):
    out = tmp_path / "coarse"
    cmd = [sys.executable, str(CODE / "utils" / "registration.py"), "--dataset", "phantom",
           "--root_path", str(phantom_root), "--labelnum", "2", "--out_dir", str(out),
           "--workers", "2", "--no_progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    killed = None
    t0 = time.time()
    while killed is None and proc.poll() is None and time.time() - t0 < 120:
        workers = _spawned_workers(proc.pid)
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)  # as the out-of-memory killer does
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert killed is not None and proc.returncode == 0, err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [c["status"] for c in summary["cases"]] == ["ok", "ok"]
    _same_coarse_labels(out, phantom_coarse)


def test_a_worker_that_dies_every_time_fails_its_case_with_the_signal(
        phantom_root, phantom_coarse, tmp_path, monkeypatch):
    monkeypatch.setattr(REGISTRATION, "process_case", killed_on_victim)
    out = tmp_path / "coarse"
    rc, _, err = call(REGISTRATION, ["--dataset", "phantom", "--root_path", phantom_root,
                                     "--labelnum", "2", "--out_dir", out, "--workers", "2",
                                     "--no_progress"])
    assert rc == 1
    assert err.splitlines() == [
        f"error: case '{VICTIM}': worker process died (killed by SIGKILL)",
        f"error: 1 of 2 case(s) failed (see {out / 'summary.json'})"]
    cases = json.loads((out / "summary.json").read_text())["cases"]
    assert [c["status"] for c in cases] == ["ok", "failed"]
    assert (out / "phantom_000.h5").read_bytes() == (phantom_coarse / "phantom_000.h5").read_bytes()
    assert not (out / f"{VICTIM}.h5").exists()


def test_a_registration_killed_and_started_again_gives_the_same_files(phantom_root,
                                                                      phantom_coarse, tmp_path):
    out = tmp_path / "coarse"
    cmd = [sys.executable, str(CODE / "utils" / "registration.py"), "--dataset", "phantom",
           "--root_path", str(phantom_root), "--labelnum", "2", "--out_dir", str(out),
           "--no_progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(out / "phantom_000.h5", proc)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # killed before the end
    subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=300)
    _same_coarse_labels(out, phantom_coarse)
    assert _temporaries(out) == []


# ----------------------------------------------------------------- a reboot mid-table


def _spec(phantom_root: Path, tmp_path: Path) -> tuple[Path, dict]:
    spec = {"title": "faults", "prefix": "f", "seeds": [1],
            "common": {"dataset": "phantom", "root_path": str(phantom_root), "labelnum": 2,
                       "patch_size": [32, 32, 16], "n_filters": 4, "batch_size": 4,
                       "labeled_bs": 2, "val_list": "none", "device": "cpu", "num_workers": 1},
            "test": {"split": "test", "overlap": 0.5},
            "rows": [{"name": "sup", "args": {"method": "sup", "label_source": "full",
                                              "max_iteration": 2}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path, spec


def test_benchmark_skips_a_row_in_use_and_resumes_a_row_cut_off_in_its_test(phantom_root,
                                                                           tmp_path):
    path, spec = _spec(phantom_root, tmp_path)
    runs, out = tmp_path / "runs", tmp_path / "out"
    exp, _, _ = row_commands(spec, spec["rows"][0], 1, runs)
    run = runs / exp
    cmd = [sys.executable, str(CODE / "benchmark.py"), "--spec", str(path), "--out", str(out),
           "--model_dir", str(runs)]

    holder = _holder(run, ROW_LOCK)  # another benchmark.py runs this row
    try:
        busy = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    finally:
        _release(holder)
    assert busy.returncode == 0, busy.stderr[-2000:]
    assert f"{exp}: skipped: row {exp}, run folder {run}: in use by process {holder.pid}" \
        in busy.stdout
    assert not (run / "last.pth").exists() and not (run / "bench_result.json").exists()

    # a reboot while test.py runs: the whole process group dies at once
    bench = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        for line in bench.stdout:
            if line.strip() == f"{exp}: testing":
                break
        time.sleep(1.0)  # test.py is starting: loading the model, segmenting
    finally:
        os.killpg(bench.pid, signal.SIGKILL)
        bench.wait(timeout=60)
    assert not (run / "bench_result.json").exists()
    table = json.loads((out / "results.json").read_text())["results"]  # the busy run's
    assert table[0]["seeds"] == []  # no row whose test did not complete
    trained = json.loads((run / TRAINED).read_text())

    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:] + again.stdout[-2000:]
    assert f"{exp}: trained earlier" in again.stdout and f"{exp}: training" not in again.stdout
    result = json.loads((run / "bench_result.json").read_text())
    assert result["resumed"] is False and result["seconds"] > trained["seconds"]
    assert load_checkpoint(run / "last.pth")["iteration"] == 2
    assert "| sup | sup | 1 |" in (out / "results.md").read_text()
