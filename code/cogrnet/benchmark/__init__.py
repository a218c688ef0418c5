"""Run a table of experiments (registration -> training -> test) and write the results table.

    python code/benchmark.py --spec benchmarks/la_half_cpu.json --out_dir docs/benchmarks/la_half_cpu

The spec (JSON) holds ``common`` training arguments, a ``registration`` block (made once,
when a row trains on coarse labels), a ``test`` block and the ``rows``; each row is a
method with its own arguments. Every (row, seed) is a run ``model/<prefix>_<row>_s<seed>/``
made by the same ``code/train.py`` and ``code/test.py`` commands a user would type (they are
written into the table). Outputs in ``--out_dir``: ``results.md`` (the table), ``results.json``,
``val_dice.png`` (validation Dice over iterations), ``case_dice.png`` (the Dice of each
scored case, every row side by side: a case that one method fails stands out) and
``comparisons.png`` (each pre-registered comparison: its per-case differences, the mean and
its standard error against the target).

A (row, seed) is finished when its run folder holds ``bench_result.json`` or when the
``results.json`` already in ``--out_dir`` records it with the same training command; finished
runs are not rerun, and the table always lists every finished row of the spec, so rows can
be run one invocation (or one machine) at a time without losing the earlier ones. To redo a
row, delete its run folder and its entry in ``results.json``.

``--collect`` runs nothing and writes the table of what is finished; ``--collect FILE ...``
also takes the runs recorded in other JSON files: another ``results.json``, or the report of
``scripts/gpu_benchmark.py`` (its ``table``), with the same rule (a run counts when its
training command is the one this spec makes). ``--status`` runs and writes nothing: the
planned runs not finished yet, their state and the time left.

The spec's keys (each checked before anything runs, a one-line error otherwise): ``prefix``
and ``rows`` (``name``, ``args``, own ``seeds``), ``title``, ``notes``, ``seeds``,
``common``, ``registration`` (``out_dir``, ``args``), ``test``, ``checkpoint``,
``headline`` (``teacher`` or ``student``), ``test_teacher``, ``comparisons`` (``a``, ``b``,
``target``) and ``max_se``: code/cogrnet/benchmark/spec.py says what each holds.
"""
# The package, stage by stage: spec (reading and checking a spec), commands (the commands
# of a row), isolation (the scored list held out), runner (running the pending runs),
# results (the finished runs and what is left), status (--status), comparisons (the paired
# differences and their verdicts), table and figures (the outputs); this module is the
# command line over them (its docstring is the --help text).
from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
from pathlib import Path
from typing import Any

from cogrnet.benchmark.commands import (CODE, REGISTRATION_LABELS, cli_flags,  # noqa: F401
                                        registration_command, row_args, row_commands,
                                        row_method, scoring_args, short_command,
                                        teacher_test_command, thread_env, uses_coarse)
from cogrnet.benchmark.comparisons import compare_rows  # noqa: F401
from cogrnet.benchmark.isolation import check_isolation, isolation_problem
from cogrnet.benchmark.results import (known_results, read_result, repo_relative,  # noqa: F401
                                       run_threads, table_state, with_run_details)
from cogrnet.benchmark.runner import (ROW_LOCK, TRAINED, ensure_registration,  # noqa: F401
                                      run_pending, run_row)
from cogrnet.benchmark.spec import read_spec
from cogrnet.benchmark.status import print_status, run_progress  # noqa: F401
from cogrnet.benchmark.table import write_outputs
from cogrnet.cli import add_debug, add_out_dir, parser
from cogrnet.errors import ConfigError
from cogrnet.presets import MODEL_DIR


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--spec", required=True, help="benchmark spec (JSON)")
    add_out_dir(p, "folder for results.md/json and val_dice.png", "--out", dest="out",
                required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run these seeds of every selected row (default: each row's own "
                        "'seeds', else the spec's)")
    p.add_argument("--rows", nargs="+", default=None,
                   help="only these row names (run and listed in the spec's order; default: "
                        "every row)")
    p.add_argument("--model_dir", default=str(MODEL_DIR),
                   help="folder of the runs, each train.py's --out_root (default: model/ in "
                        "the repository)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs side by side, each with cores/jobs threads (on 2 CPU cores two "
                        "one-thread runs make 1.6x the iterations of one two-thread run, "
                        "docs/PERFORMANCE.md); pending runs start in seed-major order: the "
                        "first seed of every selected row before any second seed")
    p.add_argument("--status", action="store_true",
                   help="run and write nothing: list the planned runs of the selected rows "
                        "not finished yet (running, part-trained, not started) with the time "
                        "left at each row's measured wall time (a row whose seeds were all "
                        "resumed: their time scaled to a whole run; a row with none yet: at a "
                        "measured row's of the same method)")
    p.add_argument("--collect", nargs="*", metavar="JSON", default=None,
                   help="run nothing: write the table of the runs already finished, adding "
                        "those recorded in the JSON files named (results.json files, or "
                        "reports of scripts/gpu_benchmark.py; default: run the pending rows)")
    add_debug(p)
    return p


def selected_rows(spec: dict[str, Any], names: list[str] | None) -> list[dict[str, Any]]:
    """The spec's rows named in ``names`` (all of them for ``None``), in the spec's order."""
    rows = [r for r in spec["rows"] if names is None or r["name"] in names]
    if names and len(rows) != len(names):
        known = ", ".join(r["name"] for r in spec["rows"])
        raise ConfigError(f"--rows: unknown row name(s); the spec has: {known}")
    return rows


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    spec_path = Path(a.spec)
    spec = read_spec(spec_path)
    rows = selected_rows(spec, a.rows)
    model_dir, out = Path(a.model_dir), Path(a.out)
    command = "python code/benchmark.py " + " ".join(
        shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))

    def finished() -> list[dict[str, Any]]:
        """Every finished run, read again: those another benchmark.py on the same
        ``--out_dir`` finished meanwhile too (its run folders, its results.json)."""
        with contextlib.redirect_stdout(io.StringIO()):  # the per-run lines of the scan
            return table_state(spec, set(), a.seeds, model_dir,
                               known_results(out, a.collect), True)[0]

    if a.status:
        with contextlib.redirect_stdout(io.StringIO()):
            every, pending = table_state(spec, {r["name"] for r in rows}, a.seeds, model_dir,
                                         known_results(out, a.collect), False)
        print_status(pending, every, "the selected rows" if a.rows else "the table")
        return 0
    if a.collect is None:  # a table that runs something keeps its scored list untouched
        check_isolation(spec, rows, f"--spec {spec_path}")
    not_held_out = isolation_problem(spec)  # the table holds every row: it says so, if any
    ensure_registration(spec, rows, out, run=a.collect is None)
    _, pending = table_state(spec, {r["name"] for r in rows}, a.seeds, model_dir,
                             known_results(out, a.collect), a.collect is not None)
    run_pending(pending, sorted({p[1] for p in pending}), a.jobs,
                lambda: write_outputs(spec, finished(), out, command, not_held_out), out,
                bool(spec.get("test_teacher")) or spec.get("headline") == "teacher")
    write_outputs(spec, finished(), out, command, not_held_out)
    print(f"wrote {out / 'results.md'}")
    return 0
