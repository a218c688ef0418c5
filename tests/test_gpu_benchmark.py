"""scripts/gpu_benchmark.py: its --smoke run on the CPU writes the report the GPU run writes,
benchmark.py --collect turns that report into the table, the GPU spec holds the CPU table's
rows on CUDA, and the seed scheduling stops the right seed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CODE, REPO, load_script

gb = load_script(REPO / "scripts" / "gpu_benchmark.py")

ROW = "cogrnet_coarse_mix2_zscore"


def test_smoke_run_writes_the_report_and_collect_makes_its_table(phantom_root, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_benchmark.py"), "--smoke", "--out",
           str(out), "--root_path", str(phantom_root), "--rows", ROW, "--seeds", "1", "2",
           "--variants", "plain", "sgd_fused", "graphs_all", "compile", "--poll_s", "0.5",
           "--budget_s", "1400"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_benchmark.json", "work"]
    report = json.loads((out / "gpu_benchmark.json").read_text())
    assert report["smoke"] and report["machine"]["torch"]
    v = report["variants"]
    assert v["plain"]["stages"]["self"]["it_per_s"] > 0 and len(v["plain"]["losses"]) == 5
    assert "needs CUDA" in v["graphs_all"]["skipped"] and "--smoke" in v["compile"]["skipped"]
    rows = {r["variant"]: r for r in report["variant_summary"]["rows"]}
    assert rows["sgd_fused"]["matches_plain"] and rows["sgd_fused"]["loss_mean_abs_diff"] < 1e-6
    assert report["profile"]["by_self_cpu_time"][0]["calls"] > 0
    assert all(r["finished"] for r in report["runs"].values()) and len(report["runs"]) == 2
    table = {r["name"]: r for r in report["table"]["results"]}
    assert [s["seed"] for s in table[ROW]["seeds"]] == [1, 2]
    assert not table["sup_full_zscore"]["seeds"]

    shown = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_benchmark.py"),
                            "--report", str(out / "gpu_benchmark.json")],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "| sgd_fused | `--sgd_impl fused` |" in shown.stdout

    # the runs' folders gone (the GPU machine is given back): the report alone makes the table
    shutil.rmtree(out / "work" / "model")

    def collect(model_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(CODE / "benchmark.py"), "--spec",
                               str(out / "work" / "smoke_spec.json"), "--out",
                               str(tmp_path / "table"), "--model_dir", str(model_dir),
                               "--collect", str(out / "gpu_benchmark.json")],
                              capture_output=True, text=True, timeout=120)

    res = collect(out / "work" / "model")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"smoke_{ROW}_s1: recorded in {out / 'gpu_benchmark.json'}" in res.stdout
    assert f"| {ROW} | cogrnet | 2 |" in (tmp_path / "table" / "results.md").read_text()
    # commands made with another --model_dir are not these runs: left out, and said so
    assert "records another training and test command" in collect(tmp_path / "elsewhere").stdout


def test_collect_names_a_bad_report_in_one_line(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"prefix": "b", "rows": [{"name": "a", "args": {"method": "sup"}}]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"table": [1, 2]}))
    for path, message in ((tmp_path / "missing.json", "file not found"),
                          (bad, "not a benchmark results file")):
        res = subprocess.run([sys.executable, str(CODE / "benchmark.py"), "--spec", str(spec),
                              "--out", str(tmp_path / "out"), "--collect", str(path)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and message in res.stderr and str(path) in res.stderr
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize("cpu_name, gpu_name", [("la_half_cpu", "la_half_gpu"),
                                               ("la_half_verdict", "la_half_verdict_gpu")])
def test_gpu_spec_holds_the_cpu_rows_on_cuda(tmp_path, cpu_name, gpu_name):
    from cogrnet.benchmark import row_commands

    from cogrnet.training.config import parse_config

    cpu = json.loads((REPO / "benchmarks" / f"{cpu_name}.json").read_text())
    gpu = json.loads((REPO / "benchmarks" / f"{gpu_name}.json").read_text())
    same = set(cpu) - {"title", "notes", "prefix", "seeds", "common", "registration"}
    assert "rows" in same and {k: gpu.get(k) for k in same} == {k: cpu[k] for k in same}
    changed = {k for k in set(cpu["common"]) | set(gpu["common"])
               if cpu["common"].get(k) != gpu["common"].get(k)}
    assert changed == {"root_path", "device", "num_workers", "nondeterministic"}
    assert gpu["common"]["device"] == "cuda" and gpu["common"]["root_path"].startswith(".gpu_data/")
    for row in gpu["rows"]:
        train = row_commands(gpu, row, 1337, tmp_path)[1]
        cfg = parse_config(train[2:])
        assert cfg.device == "cuda" and cfg.method == row["args"]["method"]
        assert cfg.coarse_dir == (gpu["registration"]["out_dir"]
                                  if row["args"]["label_source"] in ("coarse", "slices")
                                  else None)


def test_progress_projection_and_the_seed_to_stop(tmp_path):
    assert gb.work_units(100, 500) == pytest.approx(40) and gb.work_units(700, 500) == 400
    assert gb.row_iterations({"common": {}}, {"args": {"max_iteration": 9}}) == (0, 9)
    two_stage = {"args": {"pre_max_iteration": 2, "self_max_iteration": 3}}
    assert gb.row_iterations({}, two_stage) == (2, 5)
    # 10 units per second over the window: 900 units left -> 90 s after the last look
    history = [(0.0, 0.0), (30.0, 300.0), (60.0, 600.0), (70.0, 700.0)]
    assert gb.project_end(history, 1600.0, window_s=60.0) == pytest.approx(160.0)
    assert gb.project_end(history[:1], 1600.0, window_s=60.0) is None
    assert gb.project_end([(5.0, 10.0), (6.0, 20.0)], 1600.0, window_s=60.0) is None
    assert gb.project_end([(9.0, 1600.0)], 1600.0, window_s=60.0) == 9.0
    assert gb.seed_to_stop({1: 100.0, 2: 300.0, 3: 200.0}, deadline=250.0) == 3
    assert gb.seed_to_stop({1: 100.0, 2: 200.0}, deadline=250.0) is None
    assert gb.seed_to_stop({1: 100.0, 2: None}, deadline=50.0) is None
    assert gb.seed_to_stop({1: 400.0}, deadline=250.0) is None
    metrics = tmp_path / "metrics.jsonl"
    assert gb.last_iteration(metrics) is None
    metrics.write_text('{"iteration": 1}\n{"iteration": 2, "val/dice": 0.1}\n{"itera')
    assert gb.last_iteration(metrics) == 2


def test_smoke_spec_keeps_the_rows_and_shrinks_the_runs(tmp_path):
    spec = json.loads(gb.SPEC.read_text())
    small = gb.smoke_spec(spec, "root", Path(tmp_path), [4, 5])
    assert [r["name"] for r in small["rows"]] == [r["name"] for r in spec["rows"]]
    assert small["seeds"] == [4, 5] and small["common"]["device"] == "cpu"
    for big, row in zip(spec["rows"], small["rows"]):
        assert sum(gb.row_iterations(small, row)) <= 4 < sum(gb.row_iterations(spec, big))
        assert {k: v for k, v in row["args"].items() if "iteration" not in k
                and k != "uamt_passes"} == {k: v for k, v in big["args"].items()
                                            if "iteration" not in k}


def test_merge_tables_counts_a_run_that_several_seed_tables_record_once(tmp_path):
    """Each per-seed benchmark.py sees the shared run folders, so its results.json may
    record the other seeds' runs too: the merged table holds each (row, seed) once."""
    spec = {"prefix": "p", "rows": [{"name": "r", "args": {"method": "sup"}}]}
    outs = []
    for k, seeds in enumerate(([1], [1, 2])):
        out = tmp_path / f"seed{k}"
        out.mkdir()
        (out / "results.json").write_text(json.dumps({"spec": spec, "results": [
            {"name": "r", "method": "sup", "seeds": [{"seed": s} for s in seeds]}]}))
        outs.append(out)
    merged = gb.merge_tables(spec, outs)
    assert merged["results"] == [{"name": "r", "method": "sup", "seeds": [{"seed": 1},
                                                                         {"seed": 2}]}]
