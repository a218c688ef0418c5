"""The prepared GPU run: the speed variants at the paper configuration, then the
seeded half-resolution LA table, in one command that keeps to a time budget.

    python scripts/gpu_benchmark.py --prepare                     # here: .gpu_data (data to send)
    PYTHONPATH=$PWD/code python3 scripts/gpu_benchmark.py --out $OUT   # on the GPU machine (<= 9 min)
    python scripts/gpu_benchmark.py --smoke --out DIR             # the same, reduced, on a CPU
    python code/benchmark.py --spec benchmarks/la_half_gpu.json --out docs/benchmarks/la_half_gpu \\
        --collect DIR/gpu_benchmark.json                         # the seeded table from its JSON
    python scripts/gpu_benchmark.py --report DIR/gpu_benchmark.json   # the variant table again

1. Variants (``--variant_budget_s``): CoGRNet at the paper configuration (VNet-16, patch
   112x112x80, batch 8 = 4 labeled + 4 unlabeled, full labels on the first volumes of
   ``--speed_root``), ``--pre_iters`` + ``--self_iters`` iterations per variant, each variant a
   set of train.py speed switches (:data:`VARIANTS`), all with the same seed. Recorded:
   it/s per stage after warm-up, data wait, peak GPU memory, and the per-iteration loss
   compared with the plain path's (``plain_repeat`` is the plain path again: the run-to-run
   noise). Then a short torch.profiler capture of the plain path (top operations).
2. Table: the rows of ``--spec`` run by ``code/benchmark.py``, one process per seed (its rows
   side by side), all seeds at once, sharing the device. Every ``--poll_s`` the progress of
   each run is read from its ``metrics.jsonl``; when a seed's projected end falls after the
   deadline while more than one seed is running, the highest running seed is stopped (its
   runs leave the table), so that the others finish: as many seeds as fit. At the deadline
   whatever still runs is stopped; the table holds the finished runs.

``--out`` receives one file, ``gpu_benchmark.json`` (rewritten after every phase and poll, so
a run stopped early leaves what it measured); the runs live in ``--work_dir`` and
``--model_dir``. ``--smoke`` runs the same code on phantoms with a tiny network and a few
iterations (CPU, a minute or two), skipping the variants that need CUDA.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
CODE = REPO / "code"
try:
    import cogrnet  # noqa: F401  (nothing else: a script outside code/ needs the install)
except ImportError:
    sys.exit("cogrnet is not installed: run `make setup` or `pip install -e .`")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cogrnet.benchmark import (registration_command, row_commands, row_method,  # noqa: E402
                               selected_rows, uses_coarse)
from cogrnet.benchmark.spec import read_spec  # noqa: E402
from cogrnet.errors import ConfigError, DataError, run_cli  # noqa: E402
from cogrnet.fileio import read_jsonl, write_json_atomic  # noqa: E402
from cogrnet.train_config import TrainConfig  # noqa: E402

REPORT = "gpu_benchmark.json"
SPEC = REPO / "benchmarks" / "la_half_gpu.json"
GPU_DATA = REPO / ".gpu_data"
#: each variant: train.py flags on top of the defaults (on CUDA: bf16 autocast, channels-last)
VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "plain_repeat": [],
    "sgd_foreach": ["--sgd_impl", "foreach"],
    "sgd_fused": ["--sgd_impl", "fused"],
    "pinned": ["--pin_memory", "1"],
    "graphs_teacher": ["--cuda_graphs", "teacher"],
    "graphs_all": ["--cuda_graphs", "all"],
    "graphs_all_fused_pinned": ["--cuda_graphs", "all", "--sgd_impl", "fused", "--pin_memory", "1"],
    "compile": ["--compile"],
    "compile_reduce_overhead": ["--compile_mode", "reduce-overhead"],
    "compile_max_autotune": ["--compile_mode", "max-autotune-no-cudagraphs"],
}
CUDA_ONLY = {"pinned", "graphs_teacher", "graphs_all", "graphs_all_fused_pinned"}
COMPILED = {"compile", "compile_reduce_overhead", "compile_max_autotune"}
GPU_VARIANTS = ["plain", "plain_repeat", "sgd_fused", "graphs_teacher", "graphs_all",
                "graphs_all_fused_pinned", "compile_reduce_overhead"]
SMOKE_VARIANTS = ["plain", "plain_repeat", "sgd_foreach", "sgd_fused", "graphs_all"]
#: seconds a variant needs at least before it is started (compiling takes longer)
VARIANT_MIN_S, COMPILED_MIN_S = 20.0, 90.0
#: a pre-training iteration of a two-stage method costs about this share of a self-training
#: one (docs/PERFORMANCE.md: 35 vs 14.9 it/s on the H200, 2.9 vs 1.0 it/s on 2 CPU cores);
#: used only to project when a run ends
PRE_WEIGHT = 0.4
TEST_RESERVE_S = 60.0  # test.py of a finished training run (and of its teacher), start-ups included
PROFILE_S = 15.0  # kept from the variant time for the profile
#: a variant "matches" the plain path when its mean |loss difference| is at most twice the
#: plain path's own run-to-run difference plus this fraction of the mean loss
MATCH_REL = 1e-3


# ---------------------------------------------------------------------------- variants
def speed_config(argv: Sequence[str]) -> TrainConfig:
    """train.py's resolved config for ``argv``, the speed switches included."""
    from cogrnet.training.config import parse_config

    return parse_config(list(argv))


def variant_argv(a: argparse.Namespace, speed_root: str, out_root: Path) -> list[str]:
    """The train.py arguments every variant shares (the paper configuration, or the tiny
    one of ``--smoke``)."""
    argv = ["--method", "cogrnet", "--root_path", speed_root, "--label_source", "full",
            "--labelnum", str(a.speed_labelnum), "--val_list", "none",
            "--out_root", str(out_root), "--overwrite", "--no_progress", "--device", a.device,
            "--save_interval", "1000000", "--image_interval", "1000000", "--seed", "1337",
            "--num_workers", str(a.num_workers)]
    if a.smoke:
        return argv + ["--dataset", "phantom", "--n_filters", "4", "--patch_size", "32", "32",
                       "16", "--batch_size", "4", "--labeled_bs", "2"]
    return argv + ["--dataset", "la", "--batch_size", "8", "--labeled_bs", "4",
                   "--nondeterministic"]


def loss_curve(run_dir: Path) -> list[float]:
    """The main loss of every training iteration, in order (``metrics.jsonl``)."""
    losses = {}
    for row in read_jsonl(run_dir / "metrics.jsonl"):
        key = next((k for k in ("loss/pre", "loss/self") if k in row), None)
        if key is not None:
            losses[row["iteration"]] = row[key]
    return [losses[i] for i in sorted(losses)]


def compare_losses(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int]:
    """Mean and largest absolute difference of two loss curves over their common start."""
    n = min(len(a), len(b))
    if n == 0:
        return {"iterations": 0}
    d = np.abs(np.asarray(a[:n], float) - np.asarray(b[:n], float))
    return {"iterations": n, "mean_abs_diff": float(d.mean()), "max_abs_diff": float(d.max()),
            "mean_loss": float(np.mean(b[:n]))}


def _rounded(timing: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in v.items()}
            for k, v in timing.items()}


def run_variant(name: str, base: list[str], device: torch.device) -> dict[str, Any]:
    """Train one variant in this process; its timing, memory and loss curve."""
    from cogrnet.training.trainer import Trainer

    flags = VARIANTS[name]
    cfg = speed_config(base + ["--exp", f"variant_{name}"] + flags)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.run()
    rec: dict[str, Any] = {"flags": flags, "wall_seconds": round(time.perf_counter() - t0, 1),
                           "stages": _rounded(trainer.timing),
                           "losses": loss_curve(trainer.run_dir)}
    if device.type == "cuda":
        rec["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return rec


def run_variants(a: argparse.Namespace, names: list[str], base: list[str],
                 device: torch.device, until: float, report: dict[str, Any],
                 save: Any) -> None:
    """Every variant in ``names`` that fits before ``until`` (perf_counter seconds); each
    record into ``report['variants']`` as it finishes."""
    out = report.setdefault("variants", {})
    for name in names:
        left = until - time.perf_counter()
        if name in CUDA_ONLY and device.type != "cuda":
            out[name] = {"flags": VARIANTS[name], "skipped": f"needs CUDA (this run: {device})"}
        elif name in COMPILED and a.smoke:
            out[name] = {"flags": VARIANTS[name],
                         "skipped": "--smoke: compiling takes minutes on a CPU"}
        elif left < (COMPILED_MIN_S if name in COMPILED else VARIANT_MIN_S) and not a.smoke:
            out[name] = {"flags": VARIANTS[name],
                         "skipped": f"variant time used up ({left:.0f} s left)"}
        else:
            try:
                out[name] = run_variant(name, base, device)
            except Exception as err:  # noqa: BLE001 - record it and measure the next one
                out[name] = {"flags": VARIANTS[name], "error": f"{type(err).__name__}: {err}"}
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(json.dumps({name: {k: v for k, v in out[name].items() if k != "losses"}}),
              flush=True)
        save()
    report["variant_summary"] = summarize_variants(out)


def summarize_variants(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Self-training speed-up and loss agreement of each variant against ``plain``; the
    fastest variant whose loss curve matches (see :data:`MATCH_REL`)."""
    plain = variants.get("plain", {})
    if "losses" not in plain:
        return {"rows": [], "note": "no plain run to compare with"}
    base = plain["stages"].get("self", {}).get("it_per_s")
    noise = compare_losses(variants.get("plain_repeat", {}).get("losses", []), plain["losses"])
    tol = 2 * noise.get("mean_abs_diff", 0.0) + MATCH_REL * float(np.mean(plain["losses"]))
    rows = []
    for name, rec in variants.items():
        row: dict[str, Any] = {"variant": name, "flags": " ".join(rec["flags"]) or "(defaults)"}
        if "losses" not in rec:
            row["note"] = rec.get("skipped") or rec.get("error")
            rows.append(row)
            continue
        speed = rec["stages"].get("self", {}).get("it_per_s")
        cmp = compare_losses(rec["losses"], plain["losses"])
        row.update({"pre_it_per_s": rec["stages"].get("pre", {}).get("it_per_s"),
                    "self_it_per_s": speed,
                    "speedup": round(speed / base, 3) if speed and base else None,
                    "loss_mean_abs_diff": cmp.get("mean_abs_diff"),
                    "loss_max_abs_diff": cmp.get("max_abs_diff"),
                    "matches_plain": cmp.get("mean_abs_diff", np.inf) <= tol,
                    "peak_gpu_memory_gib": rec.get("peak_gpu_memory_gib")})
        rows.append(row)
    ok = [r for r in rows if r.get("matches_plain") and r.get("self_it_per_s")
          and r["variant"] != "plain_repeat"]  # the plain path again, not a candidate
    best = max(ok, key=lambda r: r["self_it_per_s"], default=None)
    return {"rows": rows, "tolerance": tol, "fastest_matching": best and best["variant"],
            "rule": f"matches_plain: mean |loss - plain loss| <= 2 x that of plain_repeat + "
                    f"{MATCH_REL} x the mean plain loss, over the iterations both ran"}


def variant_table_md(report: dict[str, Any]) -> str:
    """The variant summary as a markdown table."""
    summary = summarize_variants(report.get("variants", {}))
    lines = ["| variant | train.py flags | pre it/s | self it/s | vs plain | mean abs loss diff "
             "| matches plain | peak GPU GiB |", "|---|---|---|---|---|---|---|---|"]

    def cell(v: Any, fmt: str = "{}") -> str:
        return "" if v is None else fmt.format(v)

    for r in summary["rows"]:
        if "note" in r:
            lines.append(f"| {r['variant']} | `{r['flags']}` | {r['note']} | | | | | |")
            continue
        lines.append(f"| {r['variant']} | `{r['flags']}` | {cell(r['pre_it_per_s'], '{:.1f}')} | "
                     f"{cell(r['self_it_per_s'], '{:.2f}')} | {cell(r['speedup'], '{:.2f}x')} | "
                     f"{cell(r['loss_mean_abs_diff'], '{:.2e}')} | "
                     f"{'yes' if r['matches_plain'] else 'no'} | "
                     f"{cell(r['peak_gpu_memory_gib'])} |")
    if summary.get("rule"):
        lines += ["", f"Fastest matching variant: {summary.get('fastest_matching')} "
                      f"({summary['rule']})."]
    return "\n".join(lines)


def profile_plain(base: list[str], iters: int, device: torch.device,
                  top: int = 20) -> dict[str, Any]:
    """torch.profiler over a short plain self-training run: the operations with the most
    self device time and self CPU time (microseconds, summed over the run)."""
    from torch.profiler import ProfilerActivity, profile

    from cogrnet.training.trainer import Trainer

    argv = base + ["--exp", "variant_profile", "--pre_max_iteration", "0",
                   "--self_max_iteration", str(iters)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        Trainer(speed_config(argv)).run()
    events = prof.key_averages()

    def rows(attr: str) -> list[dict[str, Any]]:
        ranked = sorted(events, key=lambda e: getattr(e, attr, 0), reverse=True)[:top]
        return [{"name": e.key, "calls": e.count,
                 "self_cpu_us": round(e.self_cpu_time_total, 1),
                 "self_device_us": round(getattr(e, "self_device_time_total", 0.0), 1)}
                for e in ranked]

    return {"self_iterations": iters, "note": "whole run, data loading and start-up included",
            "by_self_device_time": rows("self_device_time_total") if device.type == "cuda" else [],
            "by_self_cpu_time": rows("self_cpu_time_total")}


# ------------------------------------------------------------------------------- table
def row_iterations(spec: dict[str, Any], row: dict[str, Any]) -> tuple[int, int]:
    """(pre-training iterations, all iterations) of a row."""
    args = {**spec.get("common", {}), **row.get("args", {})}
    if "max_iteration" in args:
        return 0, int(args["max_iteration"])
    pre = int(args.get("pre_max_iteration", 0))
    return pre, pre + int(args.get("self_max_iteration", 0))


def work_units(iteration: int, pre: int) -> float:
    """Progress of a run at ``iteration`` in self-training-iteration units."""
    return PRE_WEIGHT * min(iteration, pre) + max(0, iteration - pre)


def last_iteration(metrics: Path) -> int | None:
    """The iteration of the last complete line of a ``metrics.jsonl``; None before one."""
    if not metrics.is_file():
        return None
    with open(metrics, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
        lines = f.read().splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["iteration"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def project_end(history: list[tuple[float, float]], total: float, window_s: float) -> float | None:
    """When a run reaches ``total`` work units, from its ``(time, units)`` observations over
    the last ``window_s`` seconds; None while there are too few to tell."""
    if not history:
        return None
    now, done = history[-1]
    if done >= total:
        return now
    past = [h for h in history if h[0] >= now - window_s]
    t0, w0 = past[0]
    if now - t0 < window_s / 4 or done <= w0:
        return None
    return now + (total - done) * (now - t0) / (done - w0)


def seed_to_stop(ends: dict[int, float | None], deadline: float) -> int | None:
    """The seed to stop so that the others finish by ``deadline``: the highest running one,
    when more than one runs, each has a projected end (training + test) and one of them
    ends too late; else None."""
    if len(ends) < 2 or any(v is None for v in ends.values()):
        return None
    return max(ends) if max(ends.values()) > deadline else None


def smoke_spec(spec: dict[str, Any], root: str, work: Path, seeds: list[int]) -> dict[str, Any]:
    """The spec's rows on phantoms: tiny network, a few iterations, the CPU, ``seeds``."""
    rows = []
    for row in spec["rows"]:
        args = dict(row.get("args", {}))
        for key, n in (("pre_max_iteration", 1), ("self_max_iteration", 2), ("max_iteration", 2)):
            if key in args:
                args[key] = n
        if args.get("method") == "uamt":
            args["uamt_passes"] = 2
        rows.append({"name": row["name"], "args": args})
    common = {"dataset": "phantom", "root_path": root, "labelnum": 2, "patch_size": [32, 32, 16],
              "n_filters": 4, "batch_size": 4, "labeled_bs": 2, "val_list": "none",
              "device": "cpu", "num_workers": 1}
    return {"title": f"{spec.get('title', 'benchmark')} (--smoke: phantoms, CPU)",
            "prefix": "smoke", "seeds": seeds,
            "checkpoint": spec.get("checkpoint", "last.pth"),
            "headline": spec.get("headline", "student"),
            "test_teacher": spec.get("test_teacher", False), "common": common,
            "registration": {"out_dir": str(work / "coarse"),
                             "args": {"dataset": "phantom", "root_path": root, "split": "train",
                                      "labelnum": 2, "workers": 1}},
            "test": {"split": "test", "overlap": 0.5}, "rows": rows}


def preflight(spec: dict[str, Any], rows: list[dict[str, Any]], smoke: bool) -> None:
    """What the table needs, checked before any GPU time is spent; one-line errors."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError("tensorboardX is not installed (train.py logs with it): carry its wheel "
                          "(docs/PERFORMANCE.md, the prepared GPU run)") from None
    from cogrnet.data.dataset import find_list

    common = spec.get("common", {})
    root = Path(common.get("root_path", ""))
    root = root if root.is_absolute() else REPO / root
    for split in ("train", spec.get("test", {}).get("split", "val")):
        try:
            find_list(root, split, common.get("lists_dir") and REPO / common["lists_dir"])
        except DataError as err:
            raise ConfigError(f"table data: {err} (make it with scripts/gpu_benchmark.py "
                              "--prepare)") from None
    out_dir = Path(spec.get("registration", {}).get("out_dir", ""))
    out_dir = out_dir if out_dir.is_absolute() else REPO / out_dir
    if uses_coarse(spec, rows) and not smoke and not (out_dir / "summary.json").is_file():
        raise ConfigError(f"coarse labels: {out_dir}/summary.json not found (the GPU machine has "
                          "no SimpleITK to make them; run scripts/gpu_benchmark.py --prepare)")


def make_coarse(spec: dict[str, Any], log: Path) -> None:
    """The spec's registration, once, before the seeds start (each would run it otherwise)."""
    reg = spec["registration"]
    if (Path(reg["out_dir"]) / "summary.json").is_file():
        return
    with open(log, "w") as f:
        res = subprocess.run(registration_command(reg), cwd=REPO, stdout=f,
                             stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise ConfigError(f"registration failed (exit {res.returncode}), see {log}")


def stop_groups(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM the process groups of ``procs`` (train.py saves last.pth and exits), then
    SIGKILL the groups still there after ``grace_s`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        end = time.perf_counter() + grace_s
        while time.perf_counter() < end and any(p.poll() is None for p in procs):
            time.sleep(0.2)


def _tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def merge_tables(spec: dict[str, Any], outs: list[Path]) -> dict[str, Any]:
    """One ``results.json``-shaped table from the per-seed ``results.json`` files (a run
    that several of them record, each process seeing the shared run folders, counts once)."""
    seeds: dict[str, dict[int, dict[str, Any]]] = {r["name"]: {} for r in spec["rows"]}
    for out in outs:
        path = out / "results.json"
        if path.is_file():
            for r in json.loads(path.read_text())["results"]:
                for s in r["seeds"]:
                    seeds.setdefault(r["name"], {}).setdefault(s["seed"], s)
    return {"spec": spec, "results": [
        {"name": r["name"], "method": row_method(spec, r),
         "seeds": [seeds[r["name"]][k] for k in sorted(seeds[r["name"]])]}
        for r in spec["rows"]]}


@dataclass
class SeedRuns:
    """The seeded table while it runs: one ``code/benchmark.py`` process per seed
    (``procs``) and its output folder (``outs``); per training run, by experiment name
    (``runs``): its row, seed, iterations, and the ``(time, work units)`` seen so far."""

    procs: dict[int, subprocess.Popen]
    outs: dict[int, Path]
    runs: dict[str, dict[str, Any]]
    model_dir: Path


def start_seeds(spec: dict[str, Any], spec_path: Path, rows: list[dict[str, Any]],
                seeds: list[int], model_dir: Path, work: Path) -> SeedRuns:
    """One ``code/benchmark.py`` process per seed over ``rows`` (side by side), each in a
    session of its own, logging to ``work/table/seed_<seed>/benchmark.log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    table = SeedRuns(procs={}, outs={s: work / "table" / f"seed_{s}" for s in seeds}, runs={},
                     model_dir=model_dir)
    for seed in seeds:
        out = table.outs[seed]
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(CODE / "benchmark.py"), "--spec", str(spec_path),
               "--out", str(out), "--model_dir", str(model_dir), "--seeds", str(seed),
               "--jobs", str(len(rows)), "--rows", *[r["name"] for r in rows]]
        with open(out / "benchmark.log", "w") as log:  # the child keeps its own handle
            table.procs[seed] = subprocess.Popen(cmd, cwd=REPO, stdout=log,
                                                 stderr=subprocess.STDOUT, env=env,
                                                 start_new_session=True)
        for row in rows:
            exp = row_commands(spec, row, seed, model_dir)[0]
            pre, total = row_iterations(spec, row)
            table.runs[exp] = {"row": row["name"], "seed": seed, "pre": pre,
                               "units": work_units(total, pre), "iterations": total,
                               "history": []}
    return table


def observe_runs(table: SeedRuns, running: list[int], now: float, late: bool,
                 window_s: float) -> tuple[dict[int, float | None], dict[str, dict[str, Any]]]:
    """Read each run's last iteration at ``now`` into its history. Returns the projected end
    (tests included) of each running seed with runs to finish (``None``: too early to tell),
    and each run's record for the report. ``late``: a run with no iteration yet has failed."""
    ends: dict[int, float | None] = {}
    records: dict[str, dict[str, Any]] = {}
    for exp, run in table.runs.items():
        it = last_iteration(table.model_dir / exp / "metrics.jsonl")
        done = (table.model_dir / exp / "bench_result.json").is_file()
        if it is not None:
            run["history"].append((now, work_units(it, run["pre"])))
        silent = not run["history"] and late
        if run["seed"] in running and not done and not silent:  # a silent run: failed
            end = project_end(run["history"], run["units"], window_s)
            prev = ends.get(run["seed"], now)
            ends[run["seed"]] = (None if end is None or prev is None
                                 else max(prev, end + TEST_RESERVE_S))
        records[exp] = {"row": run["row"], "seed": run["seed"], "finished": done,
                        "iteration": it, "of": run["iterations"]}
    return ends, records


def stop_late_seed(table: SeedRuns, ends: dict[int, float | None], deadline: float,
                   elapsed: float, stopped: dict[int, str]) -> None:
    """Stop the seed :func:`seed_to_stop` names, if any, recording why in ``stopped``
    (``elapsed``: seconds since the command started)."""
    victim = seed_to_stop(ends, deadline)
    if victim is None:
        return
    stopped[victim] = (f"stopped {elapsed:.0f} s into the command: its runs were "
                       f"projected to end {ends[victim] - deadline:.0f} s after the "
                       "deadline")
    print(f"seed {victim}: {stopped[victim]}", flush=True)
    stop_groups([table.procs[victim]])
    for run in table.runs.values():
        run["history"] = run["history"][-1:]  # rates change once a seed is gone


def watch_seeds(table: SeedRuns, spec: dict[str, Any], a: argparse.Namespace, t0: float,
                deadline: float, report: dict[str, Any], save: Any) -> None:
    """Every ``--poll_s`` until no seed runs: the runs' progress and the merged table into
    ``report`` (saved); a seed projected to end too late stopped, and at ``deadline``
    (perf_counter seconds, like the start ``t0``) every seed still running."""
    stopped: dict[int, str] = {}
    report["runs"] = {}
    started = time.perf_counter()
    while True:
        now = time.perf_counter()
        running = [s for s, p in table.procs.items() if p.poll() is None]
        ends, records = observe_runs(table, running, now,
                                     now - started > 2 * a.rate_window_s, a.rate_window_s)
        report["runs"] = records
        report["table"] = merge_tables(spec, list(table.outs.values()))
        report["stopped_seeds"] = stopped
        save()
        if not running:
            return
        if now >= deadline:
            stopped.update({s: "still running at the deadline" for s in running})
            stop_groups([table.procs[s] for s in running])
            continue
        stop_late_seed(table, ends, deadline, now - t0, stopped)
        time.sleep(a.poll_s)


def run_table(a: argparse.Namespace, spec: dict[str, Any], spec_path: Path, work: Path,
              t0: float, deadline: float, report: dict[str, Any], save: Any) -> None:
    """The seeded table (see the module docstring) into ``report['table']`` and
    ``report['runs']``."""
    rows = selected_rows(spec, a.rows)
    preflight(spec, rows, a.smoke)
    if a.smoke and uses_coarse(spec, rows):
        make_coarse(spec, work / "registration.log")
    table = start_seeds(spec, spec_path, rows, a.seeds, Path(a.model_dir), work)
    watch_seeds(table, spec, a, t0, deadline, report, save)
    for exp, rec in report["runs"].items():
        if not rec["finished"]:
            rec["log_tail"] = _tail(table.outs[rec["seed"]] / "logs" / f"{exp}.log")
    report["table"] = merge_tables(spec, list(table.outs.values()))
    save()


# ---------------------------------------------------------------------------- prepare
def _copy_h5_float16(src: Path, dst: Path) -> None:
    """Copy an h5 case with its ``image`` stored as float16 (gzip), attributes kept."""
    import h5py

    dst.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        for key, value in fin.attrs.items():
            fout.attrs[key] = value
        for name, ds in fin.items():
            data = ds[()]
            if name == "image":
                data = data.astype(np.float16)
            fout.create_dataset(name, data=data, compression="gzip")


def prepare(a: argparse.Namespace) -> int:
    """``.gpu_data``: the table's half-resolution LA in float16, the first
    ``--speed_cases`` full-resolution training volumes in float16 (the variants), and the
    coarse labels; prints what would travel."""
    from cogrnet.data.dataset import case_path, find_list, read_list

    lists = REPO / "data" / "LA"
    train = read_list(find_list(lists, "train"))
    val = read_list(find_list(lists, "val"))
    half_ids = train + [i for i in val if i not in train]
    jobs = [(Path(a.half_source), GPU_DATA / "LA_half16", half_ids),
            (Path(a.full_source), GPU_DATA / "LA_full16", train[:a.speed_cases])]
    for src, dst, ids in jobs:
        for case in ids:
            try:
                path = case_path(src, case)
            except DataError as err:
                raise ConfigError(f"--prepare: {err}") from None
            if not (dst / f"{case}.h5").is_file():
                _copy_h5_float16(path, dst / f"{case}.h5")
    shutil.copyfile(find_list(lists, "train"), GPU_DATA / "LA_half16" / "train.list")
    shutil.copyfile(find_list(lists, "val"), GPU_DATA / "LA_half16" / "val.list")
    (GPU_DATA / "LA_full16" / "train.list").write_text("\n".join(train[:a.speed_cases]) + "\n")
    coarse = Path(a.coarse_source)
    if not (coarse / "summary.json").is_file():
        raise ConfigError(f"--coarse_source {coarse}: no summary.json (run the CPU benchmark's "
                          "registration first)")
    registration = read_spec(Path(a.spec)).get("registration")
    if not registration:
        raise ConfigError(f"--spec {a.spec}: no registration block (where its coarse labels go)")
    dest = REPO / registration["out_dir"]  # where the spec's rows read them
    shutil.rmtree(dest, ignore_errors=True)  # another table's coarse labels never mix in
    shutil.copytree(coarse, dest)
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
             for p in (GPU_DATA / "LA_half16", GPU_DATA / "LA_full16", dest,
                       REPO / ".whl") if p.exists()}
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO, capture_output=True,
                             check=True).stdout.split(b"\0")
    sizes["working tree"] = sum((REPO / f.decode()).stat().st_size for f in tracked
                                if f and (REPO / f.decode()).is_file())
    total = sum(sizes.values()) / 2 ** 20
    print(", ".join(f"{k} {v / 2 ** 20:.1f} MiB" for k, v in sizes.items())
          + f"; {total:.1f} MiB in all (the limit is 64 MiB)")
    return 0 if total < 64 else 1


# ------------------------------------------------------------------------------- main
def machine() -> dict[str, Any]:
    """Where this ran."""
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1))
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = "nvidia-smi not available"
    else:
        info["device"] = platform.processor() or platform.machine()
    return info


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("modes")
    m.add_argument("--out", help="folder for gpu_benchmark.json (on the GPU machine: $OUT)")
    m.add_argument("--smoke", action="store_true", help="reduced run on phantoms (CPU)")
    m.add_argument("--prepare", action="store_true", help="make .gpu_data here and stop")
    m.add_argument("--report", metavar="JSON", help="print the variant table of a report, stop")
    v = p.add_argument_group("variants")
    v.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                   metavar="NAME", help=f"of {', '.join(VARIANTS)}; default: "
                   f"{' '.join(GPU_VARIANTS)} (--smoke: {' '.join(SMOKE_VARIANTS)})")
    v.add_argument("--speed_root", default=str(GPU_DATA / "LA_full16"),
                   help="volumes of the variant runs (--smoke: the phantoms)")
    v.add_argument("--speed_labelnum", type=int, default=2)
    v.add_argument("--pre_iters", type=int, default=20)
    v.add_argument("--self_iters", type=int, default=150)
    v.add_argument("--profile_iters", type=int, default=10, help="0: no profile")
    v.add_argument("--num_workers", type=int, default=6, help="patch threads of a variant run")
    v.add_argument("--variant_budget_s", type=float, default=150.0,
                   help="seconds for the variants and the profile, from the start")
    t = p.add_argument_group("table")
    t.add_argument("--spec", default=str(SPEC))
    t.add_argument("--rows", nargs="+", default=None, help="default: all rows of the spec")
    t.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="default: 1337 1338 1339 (--smoke: 1 2)")
    t.add_argument("--no_table", action="store_true", help="the variants only")
    t.add_argument("--root_path", default=None,
                   help="--smoke: phantom root (default: made in the work folder)")
    t.add_argument("--model_dir", default=None,
                   help="run folders (default: model/, --smoke: WORK/model)")
    t.add_argument("--work_dir", default=None,
                   help="logs and per-seed tables (default: /tmp/gpu_benchmark, --smoke: OUT/work)")
    t.add_argument("--poll_s", type=float, default=10.0)
    t.add_argument("--rate_window_s", type=float, default=60.0)
    g = p.add_argument_group("all")
    g.add_argument("--budget_s", type=float, default=540.0,
                   help="the whole command, seconds (the table stops at the end of it)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda (--smoke: cpu)")
    pr = p.add_argument_group("--prepare")
    pr.add_argument("--half_source", default=str(REPO / "data" / "LA_half"))
    pr.add_argument("--full_source", default=str(REPO / "data" / "LA"),
                    help="the full-resolution LA training root (default data/LA)")
    pr.add_argument("--coarse_source", default=str(REPO / "model" / "bench_la_half" / "coarse"))
    pr.add_argument("--speed_cases", type=int, default=6)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    a = p.parse_args(argv)
    if a.smoke:
        a.device = "cpu"
        a.num_workers = min(a.num_workers, 1)
    a.seeds = a.seeds or ([1, 2] if a.smoke else [1337, 1338, 1339])
    return a


def show_report(path: Path) -> int:
    """``--report``: print the variant table of a written report."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--report {path}: cannot read it as JSON ({err})") from None
    print(variant_table_md(report))
    return 0


def work_folders(a: argparse.Namespace) -> tuple[Path, Path]:
    """``--out`` and the work folder (made), absolute; ``a.model_dir`` made absolute, or
    set to its default."""
    out = Path(a.out).resolve()
    work = Path(a.work_dir or (out / "work" if a.smoke else "/tmp/gpu_benchmark")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    a.model_dir = str(Path(a.model_dir).resolve()) if a.model_dir else str(
        work / "model" if a.smoke else REPO / "model")
    return out, work


def smoke_setup(a: argparse.Namespace, spec: dict[str, Any],
                work: Path) -> tuple[dict[str, Any], Path]:
    """``--smoke``: the phantoms (made in ``work`` unless ``--root_path``) for the variants
    and the table, fewer iterations in ``a``, and the reduced spec, written to
    ``work/smoke_spec.json``; returns that spec and its path."""
    if a.root_path is None:
        from cogrnet.prepare.phantom import make_phantom_set

        a.root_path = str(work / "phantom")
        if not (Path(a.root_path) / "train.list").is_file():
            make_phantom_set(a.root_path, n_train=4, n_test=2, base_shape=(40, 36, 24),
                             jitter=4, seed=0)
    a.speed_root = a.root_path
    a.pre_iters, a.self_iters = min(a.pre_iters, 2), min(a.self_iters, 3)
    a.profile_iters = min(a.profile_iters, 2)
    spec = smoke_spec(spec, a.root_path, work, a.seeds)
    spec_path = work / "smoke_spec.json"
    write_json_atomic(spec_path, spec)
    return spec, spec_path


def measure_variants(a: argparse.Namespace, work: Path, device: torch.device, t0: float,
                     report: dict[str, Any], save: Any) -> None:
    """The speed variants, then the profile of the plain path, within ``--variant_budget_s``
    of ``t0`` (perf_counter seconds), into ``report``; prints the variant table."""
    base = variant_argv(a, a.speed_root, work / "variants") + [
        "--pre_max_iteration", str(a.pre_iters), "--self_max_iteration", str(a.self_iters)]
    names = a.variants or (SMOKE_VARIANTS if a.smoke else GPU_VARIANTS)
    until = t0 + a.variant_budget_s - (PROFILE_S if a.profile_iters > 0 else 0.0)
    run_variants(a, names, base, device, until, report, save)
    if a.profile_iters > 0:
        try:
            report["profile"] = profile_plain(variant_argv(a, a.speed_root, work / "variants"),
                                              a.profile_iters, device)
        except Exception as err:  # noqa: BLE001 - the table still runs
            report["profile"] = {"error": f"{type(err).__name__}: {err}"}
    report["variants_s"] = round(time.perf_counter() - t0, 1)
    save()
    print(variant_table_md(report), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report:
        return show_report(Path(a.report))
    if a.prepare:
        return prepare(a)
    if not a.out:
        raise ConfigError("--out: required (the folder for gpu_benchmark.json)")
    from cogrnet.runtime import resolve_device

    t0 = time.perf_counter()
    device = resolve_device(a.device)
    if device.type != "cuda" and not a.smoke:
        raise ConfigError(f"--device {a.device}: no CUDA device here; use --smoke on a CPU")
    out, work = work_folders(a)
    spec_path = Path(a.spec)
    spec = read_spec(spec_path)
    if a.smoke:
        spec, spec_path = smoke_setup(a, spec, work)
    report: dict[str, Any] = {"command": "python3 scripts/gpu_benchmark.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "machine": machine(), "smoke": a.smoke,
        "budget_s": a.budget_s}

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(out / REPORT, report)

    save()
    measure_variants(a, work, device, t0, report, save)
    if not a.no_table:
        run_table(a, spec, spec_path, work, t0, t0 + a.budget_s - 15.0, report, save)
        done = sum(r["finished"] for r in report["runs"].values())
        print(f"table: {done} of {len(report['runs'])} runs finished; seeds stopped: "
              f"{report['stopped_seeds'] or 'none'}", flush=True)
    save()
    print(f"wrote {out / REPORT} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
