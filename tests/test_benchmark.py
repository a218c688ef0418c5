"""code/benchmark.py runs rows through registration -> training -> test, writes the table,
the JSON and the plot, does not rerun finished rows, and keeps the rows its results.json
records when their run folders are gone (rows run on different machines)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import cogrnet.benchmark as benchmark
from cogrnet.benchmark import runner
from conftest import CODE
from cogrnet.errors import ConfigError, DataError


def test_benchmark_table_and_skip_finished_rows(phantom_root, tmp_path):
    spec = {
        "title": "phantom smoke", "prefix": "bench", "seeds": [1],
        "common": {"dataset": "phantom", "root_path": str(phantom_root), "labelnum": 2,
                   "patch_size": [32, 32, 16], "n_filters": 4, "batch_size": 4,
                   "labeled_bs": 2, "val_list": "none", "device": "cpu", "num_workers": 1},
        "registration": {"out_dir": str(tmp_path / "coarse"),
                         "args": {"dataset": "phantom", "root_path": str(phantom_root),
                                  "split": "train", "labelnum": 2}},
        "test": {"split": "test", "overlap": 0.5},
        "rows": [
            {"name": "cog", "args": {"method": "cogrnet", "label_source": "coarse",
                                     "pre_max_iteration": 1, "self_max_iteration": 1}},
            {"name": "sup", "args": {"method": "sup", "label_source": "full", "max_iteration": 2}},
        ],
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    base = [sys.executable, str(CODE / "benchmark.py"), "--spec", str(path), "--out",
            str(tmp_path / "out"), "--model_dir", str(tmp_path / "runs")]
    first = subprocess.run(base + ["--seeds", "1", "2", "--rows", "sup"], capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:] + first.stdout[-2000:]
    assert not (tmp_path / "coarse").exists()  # no coarse row asked for: no registration
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| sup | sup | 2 |" in table and "code/train.py" in table
    # no validation list in this spec: no curve to plot, and the table says so
    assert "No validation curve recorded for: sup" in table
    assert not (tmp_path / "out" / "val_dice.png").exists()
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    by_name = {r["name"]: r for r in results}
    assert [s["seed"] for s in by_name["sup"]["seeds"]] == [1, 2] and not by_name["cog"]["seeds"]
    assert "Not run yet: cog." in table
    again = subprocess.run(base + ["--seeds", "1"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:] + again.stdout[-2000:]
    assert "bench_sup_s1: done earlier" in again.stdout
    assert (tmp_path / "coarse" / "summary.json").exists()
    assert "| cog | cogrnet | 1 |" in (tmp_path / "out" / "results.md").read_text()


def _fake_run(runs, spec, row, seed):
    """A finished (row, seed) as benchmark.py leaves it, without training (for --collect)."""
    _short, row_commands = benchmark.short_command, benchmark.row_commands

    exp, train, test = row_commands(spec, row, seed, runs)
    (runs / exp).mkdir(parents=True)
    (runs / exp / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"iteration": i, "val/dice": 0.1 * i}) for i in (1, 2)) + "\n")
    result = {"seed": seed, "run_dir": str(runs / exp), "seconds": 60.0 * seed,
              "mean": {"dice": 0.5, "jaccard": 0.4, "hd95": 3.0, "asd": 1.0},
              "train_command": _short(train), "test_command": _short(test)}
    (runs / exp / "bench_result.json").write_text(json.dumps(result))


def test_benchmark_keeps_recorded_rows_without_their_run_folders(tmp_path):
    """Rows run on another machine (run folders gone) stay in the table through
    results.json; a row whose arguments changed since drops out; a bad file is one line."""
    spec = {"title": "t", "prefix": "b", "seeds": [1], "common": {"dataset": "phantom"},
            "rows": [{"name": "a", "args": {"method": "sup", "max_iteration": 2}},
                     {"name": "c", "args": {"method": "mt", "max_iteration": 2}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    runs, out = tmp_path / "runs", tmp_path / "out"
    base = [sys.executable, str(CODE / "benchmark.py"), "--spec", str(path), "--out", str(out),
            "--model_dir", str(runs), "--collect"]
    for row in spec["rows"]:
        _fake_run(runs, spec, row, 1)

    def collect():
        res = subprocess.run(base, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:] + res.stdout[-2000:]
        return res.stdout, (out / "results.md").read_text()

    collect()
    shutil.rmtree(runs)
    stdout, table = collect()
    assert "b_a_s1: recorded in" in stdout
    assert "| a | sup | 1 |" in table and "| c | mt | 1 |" in table and "Not run yet" not in table
    seeds = json.loads((out / "results.json").read_text())["results"][0]["seeds"]
    assert seeds[0]["val_curve"] == {"iterations": [1, 2], "dice": [0.1, 0.2]}  # kept for the plot
    assert (out / "val_dice.png").stat().st_size > 0 and "![validation Dice]" in table
    assert not (out / "case_dice.png").exists() and "![Dice per case]" not in table  # none recorded

    spec["rows"][1]["args"]["max_iteration"] = 3
    path.write_text(json.dumps(spec))
    _, table = collect()
    assert "| a | sup | 1 |" in table and "| c |" not in table and "Not run yet: c." in table

    for text, message in [("[1, 2]", "not a benchmark results file"),
                          ('{"spec": {}, "results": [{"name": "a", "seeds": [{"seed": 1}]}]}',
                           "not a benchmark result (needs")]:
        (out / "results.json").write_text(text)
        bad = subprocess.run(base, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr

    # A damaged bench_result.json in a run folder: one line naming it.
    (out / "results.json").unlink()
    _fake_run(runs, spec, spec["rows"][0], 1)
    damaged = runs / "b_a_s1" / "bench_result.json"
    damaged.write_text("{")
    bad = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and str(damaged) in bad.stderr and "not valid JSON" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_collect_reads_per_case_and_teacher_scores_from_run_folders(tmp_path):
    """The Dice per case of the student's test and of the teacher's (``bench_test_ema``) go
    into the table: a teacher-Dice column and a per-case table."""
    spec = {"title": "t", "prefix": "b", "seeds": [1], "common": {"dataset": "phantom"},
            "test": {"split": "val"}, "test_teacher": True,
            "rows": [{"name": "m", "args": {"method": "mt", "max_iteration": 2}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    runs, out = tmp_path / "runs", tmp_path / "out"
    _fake_run(runs, spec, spec["rows"][0], 1)
    record = json.loads((runs / "b_m_s1" / "bench_result.json").read_text())
    (runs / "b_m_s1" / "bench_result.json").write_text(json.dumps(dict(record, threads="2+1")))
    scored = {"checkpoint": str(runs / "b_m_s1" / "last.pth"), "split": "val",
              "list_file": "val.list"}

    def summaries(**teacher):
        for folder, dice, weights in (("bench_test", (0.25, 0.75), "student"),
                                      ("bench_test_ema", (0.5, 0.875), "ema")):
            (runs / "b_m_s1" / folder).mkdir(exist_ok=True)
            settings = {**scored, "weights": weights, **(teacher if weights == "ema" else {})}
            (runs / "b_m_s1" / folder / "summary.json").write_text(json.dumps({
                "mean": {"dice": sum(dice) / 2, "jaccard": 0.4, "hd95": 3.0, "asd": 1.0},
                "settings": settings, "cases": [{"case": "caseA_long", "dice": dice[0]},
                                                {"case": "caseB_long", "dice": dice[1]}]}))
        res = subprocess.run([sys.executable, str(CODE / "benchmark.py"), "--spec", str(path),
                              "--out", str(out), "--model_dir", str(runs), "--collect"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout, (out / "results.md").read_text()

    # a teacher summary that scored another checkpoint, or with the student's weights: left out
    for other in ({"checkpoint": "best.pth"}, {"weights": "student"}):
        said, table = summaries(**other)
        assert "not the EMA teacher's scoring of the checkpoint and list" in said
        assert "| m s1 teacher |" not in table
    said, table = summaries()
    assert "| m | mt | 1 | 0.5000 |" in table and "| 0.500 | 0.6875 |" in table  # student, teacher
    assert "| run | threads | caseA_ | caseB_ |" in table
    assert "| m s1 | 2+1 | 0.250 | 0.750 |" in table
    assert "| m s1 teacher | 2+1 | 0.500 | 0.875 |" in table
    assert "scored list (`val`)" in table
    assert "![Dice per case](case_dice.png)" in table and (out / "case_dice.png").stat().st_size > 0


def test_run_threads_reads_every_start_of_the_run(tmp_path):
    """The thread counts a run trained with come from its environment.jsonl, one per start;
    a resume with another count shows as ``2+1``."""
    assert benchmark.run_threads(tmp_path) is None
    env = tmp_path / "environment.jsonl"
    env.write_text(json.dumps({"iteration": 0, "threads": 2}) + "\n")
    assert benchmark.run_threads(tmp_path) == "2"
    with open(env, "a") as f:
        f.write(json.dumps({"iteration": 500, "threads": 2}) + "\n")
        f.write("not json\n")
        f.write(json.dumps({"iteration": 750, "threads": 1}) + "\n")
    assert benchmark.run_threads(tmp_path) == "2+1"


def test_run_pending_starts_the_first_seed_of_every_row_first(tmp_path, monkeypatch):
    """With --jobs 2 the runs start seed-major, each with one thread, and the table is
    rewritten after each; a teacher method is also tested with its teacher."""

    started = []

    def fake_run_row(exp, train, test, run_dir, seed, log, env=None, test_teacher=False):
        started.append((exp, env["OMP_NUM_THREADS"], test_teacher))
        return {"seed": seed}

    monkeypatch.setattr(benchmark.runner, "run_row", fake_run_row)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(benchmark.runner.os, "cpu_count", lambda: 2)
    entries = {n: {"name": n, "method": m, "seeds": []} for n, m in (("a", "sup"), ("b", "mt"))}
    pending = [(entries[n], s, f"{n}{s}", [], [], tmp_path) for n in "ab" for s in (1, 2)]
    writes = []
    benchmark.run_pending(pending, [1, 2], 2, lambda: writes.append(1), tmp_path, test_teacher=True)
    assert sorted(started[:2]) == [("a1", "1", False), ("b1", "1", True)]  # first seeds first
    assert sorted(started[2:]) == [("a2", "1", False), ("b2", "1", True)]
    assert len(writes) == 4


def test_status_lists_each_unfinished_run_with_its_state_and_time_left(tmp_path):
    """``--status`` runs and writes nothing: a finished seed gives its row's wall time; a
    part-trained run says its iteration (and its process while one holds its lock); a row
    with no finished seed has no estimate. The table lists the planned seeds still to run."""
    spec = {"title": "t", "prefix": "b", "seeds": [1, 2, 3], "common": {"dataset": "phantom"},
            "rows": [{"name": "a", "args": {"method": "sup", "max_iteration": 10}},
                     {"name": "c", "args": {"method": "cogrnet", "pre_max_iteration": 4,
                                            "self_max_iteration": 6}, "seeds": [1]}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    runs, out = tmp_path / "runs", tmp_path / "out"
    _fake_run(runs, spec, spec["rows"][0], 1)  # 60 s
    part = runs / "b_a_s2"
    part.mkdir()
    (part / "config.json").write_text(json.dumps({"max_iteration": 10}))
    (part / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i}) + "\n"
                                                for i in (1, 2, 3, 4)))
    (runs / "b_c_s1").mkdir()
    (runs / "b_c_s1" / "config.json").write_text(json.dumps(
        {"pre_max_iteration": 4, "self_max_iteration": 6}))
    (runs / "b_c_s1" / "metrics.jsonl").write_text(json.dumps({"iteration": 5}) + "\n")
    base = [sys.executable, str(CODE / "benchmark.py"), "--spec", str(path), "--out", str(out),
            "--model_dir", str(runs)]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from cogrnet.fileio import lock_folder; "
        f"lock = lock_folder({str(part)!r}, 'run'); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(CODE)})
    try:
        assert holder.stdout.readline().strip() == "held"
        res = subprocess.run(base + ["--status"], capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["b_a_s2", "running", "(process", f"{holder.pid}),", "iteration",
                                "4", "of", "10;", "about", "1", "min", "left"]  # 60 s x 0.6
    assert lines[1].split()[:3] == ["b_a_s3", "not", "started;"] and "about 1 min" in lines[1]
    assert lines[2].split()[:5] == ["b_c_s1", "iteration", "5", "of", "10;"]
    assert "no measured run of its row or of its method yet" in lines[2]
    assert lines[3] == ("3 run(s) to go in the table: 2 of them about 0.0 h at their rows' "
                        "measured wall times (one after another; divide by the runs side by "
                        "side); 1 of rows without a measured run of their method yet (c)")
    (runs / "b_c_s1" / benchmark.TRAINED).write_text("{}")  # trained, its test to come
    res = subprocess.run(base + ["--status", "--rows", "c"], capture_output=True, text=True,
                         timeout=120)
    assert res.stdout.splitlines()[0].split()[1:] == ["trained,", "not", "scored;", "its",
                                                      "scoring", "left"]
    assert res.stdout.splitlines()[1] == ("1 run(s) to go in the selected rows: 1 trained, "
                                          "their scoring left")
    # a seed resumed from a checkpoint measured only its last part: no estimate from it
    # unless its folder says where that part started (environment.jsonl) and how long the
    # whole run is (config.json): then its time is scaled to a whole run
    record = json.loads((runs / "b_a_s1" / "bench_result.json").read_text())
    (runs / "b_a_s1" / "bench_result.json").write_text(json.dumps(dict(record, resumed=True)))
    status = [*base, "--status", "--rows", "a"]
    res = subprocess.run(status, capture_output=True, text=True, timeout=120)
    assert "no measured run of its row or of its method yet" in res.stdout.splitlines()[0]
    (runs / "b_a_s1" / "config.json").write_text(json.dumps({"max_iteration": 10}))
    (runs / "b_a_s1" / "environment.jsonl").write_text(
        "".join(json.dumps({"iteration": i}) + "\n" for i in (0, 7)))  # 60 s for 3 of 10
    res = subprocess.run(status, capture_output=True, text=True, timeout=120)
    assert res.stdout.splitlines()[0].endswith(  # 200 s x 0.6 of b_a_s2 left
        "iteration 4 of 10; about 2 min left at its resumed runs' time scaled to a whole run")
    assert "(a at its resumed runs' time scaled to a whole run)" in res.stdout.splitlines()[-1]
    assert not out.exists()  # nothing written
    subprocess.run(base + ["--collect"], capture_output=True, text=True, timeout=120, check=True)
    assert "Planned seeds still to run: a 2, 3; c 1." in (out / "results.md").read_text()


def test_a_damaged_test_summary_is_one_line_naming_it(tmp_path):
    (tmp_path / "bench_test_ema").mkdir()
    (tmp_path / "bench_test_ema" / "summary.json").write_text("{")
    with pytest.raises(DataError, match=f"^{tmp_path / 'bench_test_ema' / 'summary.json'}: "
                                        "not valid JSON"):
        benchmark.with_run_details({"run_dir": str(tmp_path)})
    # the result of a run whose scoring left a damaged or no summary: one line too
    (tmp_path / "bench_test").mkdir()
    with pytest.raises(DataError, match=f"^{tmp_path / 'bench_test'}: the scoring wrote no "):
        runner._write_result(["t"], ["s"], tmp_path, 1, None, 1.0, False)
    (tmp_path / "bench_test" / "summary.json").write_text("[")
    with pytest.raises(DataError, match=f"^{tmp_path / 'bench_test' / 'summary.json'}: "
                                        "not valid JSON"):
        runner._write_result(["t"], ["s"], tmp_path, 1, None, 1.0, False)
    assert not (tmp_path / "bench_result.json").exists()


def test_a_run_folder_of_other_commands_blocks_only_its_own_row(tmp_path):
    """A finished run folder made by other commands is left out of the table; only running
    that (row, seed) is refused (it would read that folder again), not the other rows."""
    spec = {"title": "t", "prefix": "b", "seeds": [1], "common": {"dataset": "phantom"},
            "rows": [{"name": "a", "args": {"method": "sup", "max_iteration": 2}},
                     {"name": "c", "args": {"method": "sup", "max_iteration": 3}}]}
    runs = tmp_path / "runs"
    _fake_run(runs, spec, spec["rows"][1], 1)
    done = runs / "b_c_s1" / "bench_result.json"
    done.write_text(json.dumps(dict(json.loads(done.read_text()), test_command="other")))
    for selected, collect in (({"a"}, False), ({"c"}, True)):
        results, pending = benchmark.table_state(spec, selected, None, runs, ({}, {}), collect)
        assert [len(r["seeds"]) for r in results] == [0, 0]
        assert [p[2] for p in pending] == (["b_a_s1"] if not collect else [])
    with pytest.raises(ConfigError, match=f"^{done}: a run of another test command than this "
                                          "spec's .*: move its folder away"):
        benchmark.table_state(spec, {"c"}, None, runs, ({}, {}), False)


def test_status_estimates_a_row_not_measured_yet_at_a_row_of_its_method(tmp_path, capsys):
    """A row with no run in one go yet takes the wall time of a measured row of the same
    method, and says so; a resumed seed without its run folder is no measure; without such
    a row, no estimate."""
    measured = {"name": "mt_coarse", "method": "mt",
                "seeds": [{"seconds": 600.0}, {"seconds": 60.0, "resumed": True}]}
    twin = {"name": "mt_slices", "method": "mt", "seeds": []}
    alone = {"name": "uamt", "method": "uamt", "seeds": []}
    rows = [measured, twin, alone]
    pending = [(e, 1, f"x_{e['name']}_s1", [], [], tmp_path / e["name"]) for e in (twin, alone)]
    benchmark.print_status(pending, rows)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("not started; about 10 min left at mt_coarse's time (same method; "
                             "its row has none yet)")
    assert lines[1].endswith("no measured run of its row or of its method yet")
    assert lines[2] == ("2 run(s) to go in the table: 1 of them about 0.2 h at their rows' "
                        "measured wall times (mt_slices at mt_coarse's time) (one after another; "
                        "divide by the runs side by side); 1 of rows without a measured run "
                        "of their method yet (uamt)")
    benchmark.print_status(pending[:1], [dict(measured, seeds=measured["seeds"][1:]), twin])
    assert "no measured run of its row or of its method yet" in capsys.readouterr().out


def test_wall_time_cell_leaves_out_resumed_seeds():
    """A resumed seed's wall time covers only its last part: the row's wall time is the mean
    of the seeds that ran in one go, starred; ``-*`` when every seed was resumed."""
    mean = {m: 0.5 for m in ("dice", "jaccard", "hd95", "asd")}
    row = {"name": "a", "method": "sup", "seeds": [
        {"seed": 1, "seconds": 1200.0, "mean": mean},
        {"seed": 2, "seconds": 60.0, "resumed": True, "mean": mean}]}
    cells = benchmark.table._main_table([row], False)[2].split(" | ")
    assert cells[-2] == "20.0*"
    row["seeds"][0]["resumed"] = True
    assert benchmark.table._main_table([row], False)[2].split(" | ")[-2] == "-*"
    del row["seeds"][0]["resumed"], row["seeds"][1]["resumed"]
    assert benchmark.table._main_table([row], False)[2].split(" | ")[-2] == "10.5"


def test_a_table_written_keeps_what_another_process_finished_meanwhile(tmp_path, monkeypatch):
    """Two benchmark.py on one --out_dir, each running its rows: each table it writes reads
    the finished runs again, so it holds the other's rows finished since it started."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.list").write_text("x1\nx2\n")
    (lists / "test.list").write_text("t1\n")
    spec = {"title": "t", "prefix": "b", "seeds": [1],
            "common": {"dataset": "phantom", "root_path": str(lists), "val_list": "none"},
            "rows": [{"name": "a", "args": {"method": "sup", "max_iteration": 2}},
                     {"name": "c", "args": {"method": "sup", "max_iteration": 3}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    runs, out = tmp_path / "runs", tmp_path / "out"

    def fake_run_row(exp, train, test, run_dir, seed, log, env=None, test_teacher=False):
        _fake_run(runs, spec, spec["rows"][0], 1)  # the other process finishes row a
        _fake_run(runs, spec, spec["rows"][1], 1)  # this one, row c
        return json.loads((run_dir / "bench_result.json").read_text())

    monkeypatch.setattr(benchmark.runner, "run_row", fake_run_row)
    assert benchmark.main(["--spec", str(path), "--out", str(out), "--model_dir", str(runs),
                           "--rows", "c"]) == 0
    table = (out / "results.md").read_text()
    assert "| a | sup | 1 |" in table and "| c | sup | 1 |" in table
    recorded = json.loads((out / "results.json").read_text())["results"]
    assert [len(r["seeds"]) for r in recorded] == [1, 1]


def test_mean_curve_averages_the_seeds_at_their_shared_iterations():
    from cogrnet.benchmark.figures import mean_curve
    seeds = [{"iterations": [250, 500, 750], "dice": [0.6, 0.8, 0.7]},
             {"iterations": [250, 500], "dice": [0.4, 0.6]}]  # stopped before 750
    its, dice = mean_curve(seeds)
    assert its == [250, 500] and dice == pytest.approx([0.5, 0.7])
    assert mean_curve([]) == ([], [])
