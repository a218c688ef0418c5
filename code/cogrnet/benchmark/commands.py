"""The commands a benchmark row runs: ``code/train.py`` and ``code/test.py`` (and the
registration's ``code/utils/registration.py``) with the flags of the spec, exactly as a
user would type them, and running one with its output into a log."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cogrnet.errors import ConfigError
from cogrnet.presets import REPO_ROOT

#: the entry scripts a row runs (``code/train.py`` ...), the commands a user would type
CODE = REPO_ROOT / "code"


def cli_flags(args: dict[str, Any]) -> list[str]:
    """``{"patch_size": [64, 64, 32], "amp": 0, "no_augment": true}`` -> CLI flags."""
    out: list[str] = []
    for k, v in args.items():
        if v is None or v is False:
            continue
        out.append(f"--{k}")
        if v is True:
            continue
        out += [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
    return out


def thread_env(threads: int | None) -> dict[str, str] | None:
    """The environment of a row's commands: ``threads`` intra-op threads (torch, OpenMP,
    MKL) unless the caller's environment already sets them; ``None``: inherit as is."""
    if threads is None:
        return None
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, str(threads))
    return env


def run_command(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run a command from the repository root, its output into ``log``; seconds taken."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        res = subprocess.run(cmd, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if res.returncode != 0:
        raise ConfigError(f"command failed (exit {res.returncode}), see {log}: {shlex.join(cmd)}")
    return time.perf_counter() - t0


def short_command(cmd: list[str]) -> str:
    return shlex.join(["python"] + [c for c in cmd[1:]]).replace(str(REPO_ROOT) + "/", "")


#: the label sources read from the registration's output (``--coarse_dir``)
REGISTRATION_LABELS = ("coarse", "slices")


def row_args(spec: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A row's training arguments: the spec's ``common`` ones updated by the row's own."""
    return {**spec.get("common", {}), **row.get("args", {})}


def row_method(spec: dict[str, Any], row: dict[str, Any]) -> str:
    """The method a row trains (its own ``args``, else ``common``, else train.py's default)."""
    return row_args(spec, row).get("method", "cogrnet")


def uses_coarse(spec: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether some of ``rows`` trains on the registration's output (``label_source``
    coarse, or slices: the two annotated slices it stores)."""
    return any(row_args(spec, r).get("label_source") in REGISTRATION_LABELS for r in rows)


def scoring_args(spec: dict[str, Any], train_args: dict[str, Any]) -> dict[str, Any]:
    """The scoring arguments of a row trained with ``train_args``: its data (``dataset``,
    ``root_path``, ``lists_dir``), overridden by the spec's ``test`` block."""
    return {"dataset": train_args.get("dataset"), "root_path": train_args.get("root_path"),
            "lists_dir": train_args.get("lists_dir"), **spec.get("test", {})}


def row_commands(spec: dict[str, Any], row: dict[str, Any], seed: int,
                 model_dir: Path) -> tuple[str, list[str], list[str]]:
    """The run name and the train / test commands of one (row, seed)."""
    exp = f"{spec['prefix']}_{row['name']}_s{seed}"
    train_args = {**row_args(spec, row), "seed": seed, "exp": exp,
                  "out_root": str(model_dir), "no_progress": True}
    if train_args.get("label_source") in REGISTRATION_LABELS:
        train_args["coarse_dir"] = spec["registration"]["out_dir"]
    train = [sys.executable, str(CODE / "train.py"), *cli_flags(train_args)]
    scoring = {**scoring_args(spec, train_args),
               "checkpoint": str(model_dir / exp / spec.get("checkpoint", "last.pth")),
               "out_dir": str(model_dir / exp / "bench_test"), "no_progress": True}
    test = [sys.executable, str(CODE / "test.py"), *cli_flags(scoring)]
    return exp, train, test


def teacher_test_command(test: list[str]) -> list[str]:
    """The test command of a row scored with the EMA teacher's weights (``--ema``), into
    ``bench_test_ema`` beside the student's ``bench_test``."""
    cmd = list(test)
    k = cmd.index("--out_dir") + 1
    cmd[k] = str(Path(cmd[k]).with_name("bench_test_ema"))
    return cmd + ["--ema"]


def registration_command(reg: dict[str, Any]) -> list[str]:
    """The command that makes a spec's coarse labels: ``code/utils/registration.py`` with
    the flags of the ``registration`` block's ``args`` and its ``out_dir``."""
    return [sys.executable, str(CODE / "utils" / "registration.py"),
            *cli_flags(reg["args"]), "--out_dir", reg["out_dir"]]
