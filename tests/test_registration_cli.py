"""code/utils/registration.py end to end on phantoms: outputs, determinism, user annotations,
bad input (one line, other cases complete, non-zero exit)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cogrnet.annotation import read_coarse_label, simulate_dpa
from cogrnet.annotation.io import KEYS
from cogrnet.data.dataset import CaseStore, write_case_h5
from cogrnet.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "code" / "utils" / "registration.py"


def _load_cli():
    spec = importlib.util.spec_from_file_location("registration_cli", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


CLI = _load_cli()


def run(argv, capsys):
    rc = run_cli(CLI.main, [str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def summary(out_dir: Path) -> dict:
    return json.loads((out_dir / "summary.json").read_text())


def write_annotation(ann_dir: Path, case_id: str, sparse, axes, indices) -> None:
    ann_dir.mkdir(parents=True, exist_ok=True)
    with h5py.File(ann_dir / f"{case_id}.h5", "w") as f:
        f["annotation"] = np.asarray(sparse, dtype=np.uint8)
        f["annotation"].attrs["axes"] = list(axes)
        f["annotation"].attrs["indices"] = list(indices)


def test_cli_phantoms_end_to_end_and_deterministic(phantom_root, tmp_path, capsys):
    outs = []
    for k, workers in enumerate((1, 2)):
        out = tmp_path / f"out{k}"
        rc, _, err = run(["--dataset", "phantom", "--root_path", phantom_root, "--split", "train",
                          "--labelnum", 3, "--out_dir", out, "--workers", workers,
                          "--seed", 5], capsys)
        assert rc == 0, err
        outs.append(out)
    s = summary(outs[0])
    assert [c["id"] for c in s["cases"]] == ["phantom_000", "phantom_001", "phantom_002"]
    assert all(c["status"] == "ok" for c in s["cases"])
    assert s["mean_dice"] > 0.8 and s["mean_dice_a"] > 0.7 and s["mean_dice_b"] > 0.7
    assert set(s) >= {"cases", "mean_dice", "mean_dice_a", "mean_dice_b", "seconds_per_case",
                      "settings"}
    assert s["settings"]["seed"] == 5 and s["settings"]["axes"] == [2, 1]
    # the annotated slices are exact: Dice 1 at distance 0, lower further away
    dist = s["quality"]["distance"]
    assert dist["fused"][0] == dist["a"][0] == dist["b"][0] == 1.0
    assert min(v for v in dist["fused"] if v is not None) < 1.0
    assert (outs[0] / "dice_vs_distance.png").stat().st_size > 1000
    assert len(s["quality"]["confidence"]["errors_below"]) == 4
    store = CaseStore(phantom_root)
    for case_id in ("phantom_000", "phantom_001", "phantom_002"):
        shape = store.get(case_id, with_label=False).shape
        c = read_coarse_label(outs[0], case_id, expected_shape=shape)
        assert c.label.dtype == np.uint8 and c.weight.dtype == np.float32
        assert 0 <= c.weight.min() and c.weight.max() <= 1
        with h5py.File(outs[0] / f"{case_id}.h5") as f0, h5py.File(outs[1] / f"{case_id}.h5") as f1:
            for key in KEYS:  # 1 worker and 2 workers: byte-identical arrays
                assert f0[key][()].tobytes() == f1[key][()].tobytes(), (case_id, key)
        assert (outs[0] / f"{case_id}.h5").read_bytes() == (outs[1] / f"{case_id}.h5").read_bytes()


def test_cli_largest_policy_and_axes(phantom_root, tmp_path, capsys):
    out = tmp_path / "o"
    rc, _, err = run(["--dataset", "phantom", "--root_path", phantom_root, "--ids", "phantom_003",
                      "--out_dir", out, "--slice_policy", "largest", "--axes", 0, 2], capsys)
    assert rc == 0, err
    case = CaseStore(phantom_root).get("phantom_003")
    dpa = simulate_dpa(case.label, (0, 2), "largest", "phantom_003")
    c = read_coarse_label(out, "phantom_003")
    assert c.axes == (0, 2) and c.indices == dpa.indices
    assert np.array_equal(c.annotation, dpa.sparse)


def test_cli_user_annotations(phantom_root, tmp_path, capsys):
    """User slices: phantom_000 has its label (Dice reported), 'nolab' has none (Dice null)."""
    root = tmp_path / "root"
    ann = tmp_path / "ann"
    store = CaseStore(phantom_root)
    for case_id in ("phantom_000", "phantom_001"):
        case = store.get(case_id)
        dpa = simulate_dpa(case.label, (2, 0), "largest", case_id)
        write_annotation(ann, case_id, dpa.sparse, dpa.axes, dpa.indices)
        if case_id == "phantom_000":
            write_case_h5(root / f"{case_id}.h5", case.image, case.label)
        else:
            write_case_h5(root / "nolab.h5", case.image, None)
            (ann / f"{case_id}.h5").rename(ann / "nolab.h5")
    out = tmp_path / "out"
    rc, _, err = run(["--root_path", root, "--ids", "phantom_000", "nolab", "--out_dir", out,
                      "--annotations", ann], capsys)
    assert rc == 0, err
    s = summary(out)
    by_id = {c["id"]: c for c in s["cases"]}
    assert by_id["phantom_000"]["dice"] > 0.7
    assert by_id["nolab"]["dice"] is None and by_id["nolab"]["status"] == "ok"
    c = read_coarse_label(out, "nolab")
    assert c.axes == (2, 0)
    with h5py.File(ann / "nolab.h5") as f:
        assert np.array_equal(c.annotation, f["annotation"][()])
    assert s["settings"]["axes"] == "from annotations"


@pytest.fixture()
def bad_root(phantom_root, tmp_path):
    """A flat root with one good case and one bad case per problem, plus user annotations."""
    root, ann = tmp_path / "bad", tmp_path / "ann"
    case = CaseStore(phantom_root).get("phantom_000")
    img, lab = case.image, case.label
    dpa = simulate_dpa(lab, (2, 1), "middle", "x")
    for name in ("good", "empty", "shape", "index"):
        write_case_h5(root / f"{name}.h5", img, lab)
    write_annotation(ann, "good", dpa.sparse, dpa.axes, dpa.indices)
    empty = dpa.sparse.copy()
    empty[:, :, dpa.indices[0]] = 0
    write_annotation(ann, "empty", empty, dpa.axes, dpa.indices)
    write_annotation(ann, "shape", dpa.sparse[:-1], dpa.axes, dpa.indices)
    write_annotation(ann, "index", dpa.sparse, dpa.axes, (img.shape[2] + 3, dpa.indices[1]))
    thin_img, thin_lab = img[:, :, :1].copy(), lab[:, :, :1].copy()
    thin_lab[10:20, 10:20, 0] = 1
    write_case_h5(root / "thin.h5", thin_img, thin_lab)
    write_annotation(ann, "thin", np.zeros_like(thin_lab), (2, 1), (0, 5))
    return root, ann


@pytest.mark.parametrize("case_id, message", [
    ("empty", "case 'empty': annotated slice A (axis 2, index"),
    ("shape", "case 'shape': annotation shape"),
    ("index", "case 'index': annotated slice index"),
    ("thin", "case 'thin': volume has 1 slice(s) along annotated axis 2, need at least 2"),
    ("ghost", "case 'ghost': no h5 file at"),
])
def test_cli_bad_input_one_line_others_complete(bad_root, tmp_path, capsys, case_id, message):
    root, ann = bad_root
    out = tmp_path / "out"
    rc, _, err = run(["--root_path", root, "--ids", "good", case_id, "--out_dir", out,
                      "--annotations", ann, "--workers", 2], capsys)
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert any(message in ln for ln in lines), err
    s = summary(out)
    by_id = {c["id"]: c for c in s["cases"]}
    assert by_id["good"]["status"] == "ok" and (out / "good.h5").is_file()
    bad = by_id[case_id]
    assert bad["status"] == "failed" and message in bad["reason"] and "\n" not in bad["reason"]
    assert not (out / f"{case_id}.h5").exists()


def test_cli_simulated_thin_volume_fails_alone(bad_root, tmp_path, capsys):
    root, _ = bad_root
    out = tmp_path / "out"
    rc, _, err = run(["--root_path", root, "--ids", "thin", "good", "--out_dir", out], capsys)
    assert rc != 0 and "case 'thin': volume has 1 slice(s)" in err
    assert summary(out)["cases"][1]["status"] == "ok"


def test_cli_propagation_settings_recorded_and_used(phantom_root, tmp_path, capsys):
    base, var = tmp_path / "base", tmp_path / "var"
    common = ["--dataset", "phantom", "--root_path", phantom_root, "--ids", "phantom_003",
              "--no-previews", "--no_progress"]
    assert run(common + ["--out_dir", base], capsys)[0] == 0
    rc, _, err = run(common + ["--out_dir", var, "--propagation", "demons=diffeomorphic",
                               "levels=2"], capsys)
    assert rc == 0, err
    prop = summary(var)["settings"]["propagation"]
    assert prop["demons"] == "diffeomorphic" and prop["levels"] == 2
    assert summary(base)["settings"]["propagation"]["demons"] == "fast_symmetric"
    a, b = read_coarse_label(base, "phantom_003"), read_coarse_label(var, "phantom_003")
    assert not np.array_equal(a.label_a, b.label_a)  # the setting reached the chain
    assert summary(var)["mean_dice"] > 0.8
    rc, _, err = run(common + ["--out_dir", var, "--propagation", "levels=0"], capsys)
    assert rc == 2 and err.strip() == ("error: propagation levels and shrink must be >= 1 "
                                       "(got 0, 2)")


def test_cli_config_errors(phantom_root, tmp_path, capsys):
    rc, _, err = run(["--dataset", "phantom", "--root_path", phantom_root, "--labelnum", 9,
                      "--out_dir", tmp_path / "o"], capsys)
    assert rc == 2 and err.strip().startswith("error: --labelnum 9 is larger than split")
    assert len(err.strip().splitlines()) == 1
    rc, _, err = run(["--dataset", "phantom", "--root_path", phantom_root, "--axes", 1, 1,
                      "--out_dir", tmp_path / "o"], capsys)
    assert rc == 2 and "--axes" in err
    rc, _, err = run(["--root_path", tmp_path / "nowhere", "--out_dir", tmp_path / "o"], capsys)
    assert rc == 2 and "dataset root folder not found" in err


def test_cli_subprocess_help_and_demo_shape(phantom_root, tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "phantom", "--root_path",
                          str(phantom_root), "--labelnum", "2", "--out_dir", str(tmp_path / "d"),
                          "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "d" / "phantom_001.h5").is_file()
