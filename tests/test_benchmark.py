"""code/benchmark.py runs rows through registration -> training -> test, writes the table,
the JSON and the plot, and does not rerun finished rows."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import CODE


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
    assert (tmp_path / "out" / "val_dice.png").stat().st_size > 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [s["seed"] for s in results[0]["seeds"]] == [1, 2]
    again = subprocess.run(base + ["--seeds", "1"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:] + again.stdout[-2000:]
    assert "bench_sup_s1: done earlier" in again.stdout
    assert (tmp_path / "coarse" / "summary.json").exists()
    assert "| cog | cogrnet | 1 |" in (tmp_path / "out" / "results.md").read_text()
