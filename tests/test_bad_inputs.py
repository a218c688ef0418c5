"""The bad-input catalogue (issue 9): every entry point, fed each kind of broken input, ends
with a non-zero exit status and a one-line ``error: ...`` naming the file or argument and
the problem, shows no traceback (unless ``--debug``), and damages nothing already written.
Registration, test.py and preprocess.py go on past a bad case and report it at the end.

Entry points are called in-process: each script is loaded as a module and run through
``cogrnet.errors.run_cli`` (what ``python code/<script>.py`` does); one subprocess checks the
real command line.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import CODE
from cogrnet.data.dataset import CaseStore, write_case_h5
from cogrnet.errors import run_cli
from cogrnet.networks import build_network, network_config
from cogrnet.checkpoints import atomic_torch_save, make_checkpoint

sitk = pytest.importorskip("SimpleITK")


def _load(rel: str):
    path = CODE / rel
    spec = importlib.util.spec_from_file_location(f"_bad_inputs_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


REGISTRATION = _load("utils/registration.py")
TRAIN = _load("train.py")
TEST = _load("test.py")
PREDICT = _load("predict.py")
PREPROCESS = _load("preprocess.py")
RESAMPLE = _load("utils/resample_dataset.py")

PATCH = ["32", "32", "16"]
TRAIN_FAST = ["--dataset", "phantom", "--n_filters", "4", "--patch_size", *PATCH,
              "--batch_size", "4", "--labeled_bs", "2", "--device", "cpu", "--no_progress",
              "--num_workers", "1", "--label_source", "full", "--method", "sup",
              "--max_iteration", "1", "--val_list", "none"]


# ---------------------------------------------------------------------------- helpers


def call(script, argv) -> tuple[int, str, str]:
    """Run ``script.main`` as the command line does; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_cli(script.main, [str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(result, *needles) -> str:
    """Non-zero exit, no traceback, stderr exactly one ``error: `` line holding ``needles``."""
    rc, out, err = result
    assert rc != 0, (out, err)
    assert "Traceback" not in out + err, err
    text = err.strip()
    assert text.startswith("error: ") and "\n" not in text, err
    for needle in needles:
        assert str(needle) in text, f"{needle!r} not in {text!r}"
    return text


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error: ")]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` -> its hash (to show nothing was written or changed)."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def h5(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


@pytest.fixture()
def unwritable(tmp_path):
    """An output folder that cannot be created or written: a read-only folder where chmod
    stops writes; as root (chmod does not stop root) a path whose parent is a regular file."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        (ro / "probe").write_text("")
    except OSError:
        yield ro / "out"
        os.chmod(ro, 0o755)
        return
    (ro / "probe").unlink()
    os.chmod(ro, 0o755)
    blocker = tmp_path / "a_regular_file"
    blocker.write_text("not a folder")
    yield blocker / "out"


# ------------------------------------------------------------------- bad h5 case files
#
# name -> (writer(path, image, label), what the message must say). ``missing`` has no file.


def _variant(kind):
    def write(path: Path, img: np.ndarray, lab: np.ndarray) -> None:
        if kind == "corrupt":
            path.write_bytes(b"this is not an HDF5 file" * 20)
        elif kind == "truncated":
            write_case_h5(path, img, lab)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])
        elif kind == "no_label":
            h5(path, image=img)
        elif kind == "wrong_keys":
            h5(path, img=img, seg=lab)
        elif kind == "image_2d":
            h5(path, image=img[:, :, 0], label=lab[:, :, 0])
        elif kind == "image_4d":
            h5(path, image=img[None], label=lab)
        elif kind == "label_shape":
            h5(path, image=img, label=lab[:, :, :-2])
        elif kind == "nan":
            bad = img.copy()
            bad[3, 4, 5] = np.nan
            h5(path, image=bad, label=lab)
        elif kind == "inf":
            bad = img.copy()
            bad[0, 0, 0] = np.inf
            h5(path, image=bad, label=lab)
        elif kind == "label_classes":
            bad = lab.copy()
            bad[lab > 0] = 3
            h5(path, image=img, label=bad)
        elif kind == "empty_label":
            h5(path, image=img, label=np.zeros_like(lab))
        else:  # pragma: no cover
            raise ValueError(kind)
    return write


BAD_H5 = {
    "corrupt": "corrupt or unreadable h5 file",
    "truncated": "corrupt or unreadable h5 file",
    "no_label": "missing h5 key(s) label",
    "wrong_keys": "missing h5 key(s) image",
    "image_2d": "image must be 3D",
    "image_4d": "image must be 3D",
    "label_shape": "does not match image shape",
    "nan": "NaN/inf",
    "inf": "NaN/inf",
    "label_classes": "outside the class range",
    "empty_label": "label holds no foreground voxel",
}


@pytest.fixture(scope="module")
def cases(phantom_root):
    """Two good phantom cases' arrays and one volume smaller than the patch on every axis."""
    store = CaseStore(phantom_root)
    a, b = (store.get(i) for i in ("phantom_000", "phantom_001"))
    small_img = np.ascontiguousarray(a.image[8:28, 8:28, 6:16])
    small_lab = np.ascontiguousarray(a.label[8:28, 8:28, 6:16])
    assert small_lab.any()
    return {"good_a": (a.image, a.label), "good_b": (b.image, b.label),
            "small": (small_img, small_lab)}


@pytest.fixture(scope="module")
def bad_root(cases, tmp_path_factory) -> Path:
    """A flat dataset root: good_a, good_b, small, and one file per entry of BAD_H5."""
    root = tmp_path_factory.mktemp("bad_root")
    for name, (img, lab) in cases.items():
        write_case_h5(root / f"{name}.h5", img, lab)
    img, lab = cases["good_a"]
    for kind in BAD_H5:
        _variant(kind)(root / f"{kind}.h5", img, lab)
    return root


def write_list(folder: Path, name: str, ids) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


# -------------------------------------------------------------------------- checkpoints


def _checkpoint(path: Path, n_filters: int = 4, weights_filters: int | None = None,
                network: dict | None = None) -> Path:
    torch.manual_seed(0)
    net_cfg = network_config(n_filters=n_filters)
    state = build_network(network_config(n_filters=weights_filters or n_filters)).state_dict()
    config = {"network": network or net_cfg, "patch_size": [32, 32, 16], "dataset": "phantom"}
    atomic_torch_save(make_checkpoint(state, config, 1, "self", ema_state=state), path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """A good checkpoint and the bad ones every model-loading entry point must refuse."""
    d = tmp_path_factory.mktemp("ckpts")
    good = _checkpoint(d / "good.pth")
    (d / "corrupt.pth").write_bytes(good.read_bytes()[:1000])
    (d / "garbage.pth").write_bytes(b"\x80\x02 not a pickle at all")
    torch.save(build_network(network_config(n_filters=4)).state_dict(), d / "foreign.pth")
    _checkpoint(d / "mismatch.pth", n_filters=4, weights_filters=8)
    _checkpoint(d / "badnet.pth", network={"name": "unet3d", "n_filters": 4})
    return {p.stem: p for p in d.iterdir()}


BAD_CKPT = [
    ("missing", "checkpoint not found"),
    ("corrupt", "corrupt or unreadable checkpoint"),
    ("garbage", "corrupt or unreadable checkpoint"),
    ("foreign", "not a CoGRNet checkpoint"),
    ("mismatch", "weights do not fit the network (size mismatch for "),
    ("badnet", "cannot rebuild the network"),
]


def _ckpt_path(ckpts, name: str, tmp_path: Path) -> Path:
    return ckpts.get(name, tmp_path / f"{name}.pth")


# =============================================================================
# registration (code/utils/registration.py)


@pytest.fixture(scope="module")
def registration_run(bad_root, tmp_path_factory):
    """One run over a list holding a good case, every bad h5 file and an unknown ID; the
    bad cases' earlier outputs must survive it."""
    tmp = tmp_path_factory.mktemp("reg")
    ids = ["good_a", *BAD_H5, "missing"]
    lst = write_list(tmp, "train.list", ids)
    out = tmp / "out"
    out.mkdir()
    (out / "corrupt.h5").write_bytes(b"an earlier output")
    before = digest(out / "corrupt.h5")
    result = call(REGISTRATION, ["--root_path", bad_root, "--split", lst, "--labelnum", len(ids),
                                 "--out_dir", out])
    return result, out, before


@pytest.mark.parametrize("kind,message", [*BAD_H5.items(), ("missing", "no h5 file at")])
def test_registration_reports_each_bad_case_and_goes_on(registration_run, bad_root, kind,
                                                        message):
    (rc, out, err), out_dir, _ = registration_run
    assert rc == 1 and "Traceback" not in out + err
    lines = [ln for ln in error_lines(err) if f"/{kind}.h5" in ln or f"'{kind}'" in ln]
    assert len(lines) == 1 and message in lines[0], err
    if kind != "missing":
        assert str(bad_root / f"{kind}.h5") in lines[0]
    row = {c["id"]: c for c in json.loads((out_dir / "summary.json").read_text())["cases"]}[kind]
    assert row["status"] == "failed" and message in row["reason"]


def test_registration_good_case_done_and_old_outputs_kept(registration_run):
    (rc, _, err), out_dir, before = registration_run
    s = json.loads((out_dir / "summary.json").read_text())
    assert [c["id"] for c in s["cases"] if c["status"] == "ok"] == ["good_a"]
    assert (out_dir / "good_a.h5").is_file()
    assert f"error: {len(BAD_H5) + 1} of {len(BAD_H5) + 2} case(s) failed" in err
    assert digest(out_dir / "corrupt.h5") == before       # an earlier output is not touched
    assert not list(out_dir.glob("*.tmp"))


def _ann(path: Path, sparse, axes=(2, 1), indices=None, key="annotation") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f[key] = np.asarray(sparse, np.uint8)
        if axes is not None:
            f[key].attrs["axes"] = list(axes)
        if indices is not None:
            f[key].attrs["indices"] = list(indices)


ANNOTATION_CASES = {
    "ann_missing": "annotation file",
    "ann_corrupt": "corrupt or unreadable annotation file",
    "ann_key": "missing h5 key 'annotation'",
    "ann_attrs": "lacks attribute(s) indices",
    "ann_shape": "annotation shape",
    "ann_empty": "annotated slice A (axis 2, index",
    "ann_values": "are not binary 0/1",
}


def test_registration_bad_user_annotations(cases, tmp_path):
    """User annotations: one good, one per problem; each named in one line, the good one done."""
    from cogrnet.annotation import simulate_dpa

    img, lab = cases["good_a"]
    root, ann, out = tmp_path / "root", tmp_path / "ann", tmp_path / "out"
    dpa = simulate_dpa(lab, (2, 1), "middle", "x")
    ids = ["good", *ANNOTATION_CASES]
    for cid in ids:
        write_case_h5(root / f"{cid}.h5", img, lab)
    _ann(ann / "good.h5", dpa.sparse, dpa.axes, dpa.indices)
    (ann / "ann_corrupt.h5").write_bytes(b"garbage" * 10)
    _ann(ann / "ann_key.h5", dpa.sparse, dpa.axes, dpa.indices, key="slices")
    _ann(ann / "ann_attrs.h5", dpa.sparse, dpa.axes, None)
    _ann(ann / "ann_shape.h5", dpa.sparse[:, :, :-1], dpa.axes, dpa.indices)
    empty = dpa.sparse.copy()
    empty[:, :, dpa.indices[0]] = 0
    _ann(ann / "ann_empty.h5", empty, dpa.axes, dpa.indices)
    _ann(ann / "ann_values.h5", dpa.sparse * 2, dpa.axes, dpa.indices)
    rc, o, err = call(REGISTRATION, ["--root_path", root, "--ids", *ids, "--out_dir", out,
                                     "--annotations", ann])
    assert rc == 1 and "Traceback" not in o + err
    for cid, message in ANNOTATION_CASES.items():
        lines = [ln for ln in error_lines(err) if f"{cid}.h5" in ln]
        assert len(lines) == 1 and message in lines[0], (cid, err)
        assert str(ann / f"{cid}.h5") in lines[0]
        assert not (out / f"{cid}.h5").exists()
    assert (out / "good.h5").is_file()


@pytest.mark.parametrize("make,message", [
    (lambda root, tmp: ["--split", write_list(tmp, "dup.list", ["good_a", "good_b", "good_a"]),
                        "--labelnum", "2"], "duplicated case ID(s) good_a"),
    (lambda root, tmp: ["--split", write_list(tmp, "two.list", ["good_a", "good_b"]),
                        "--labelnum", "3"], "--labelnum 3 is larger than split"),
    (lambda root, tmp: ["--split", write_list(tmp, "two.list", ["good_a", "good_b"]),
                        "--labelnum", "0"], "--labelnum must be >= 1"),
    (lambda root, tmp: ["--split", "nosuch", "--labelnum", "1"], "split 'nosuch': no list file"),
    (lambda root, tmp: ["--ids", "good_a", "--annotations", tmp / "none"],
     "--annotations: folder"),
    (lambda root, tmp: ["--ids", "good_a", "--workers", "0"], "--workers must be >= 1"),
])
def test_registration_argument_errors(bad_root, tmp_path, make, message):
    out = tmp_path / "out"
    argv = ["--root_path", bad_root, *make(bad_root, tmp_path), "--out_dir", out]
    assert_one_line_error(call(REGISTRATION, argv), message)
    assert not out.exists()


def test_registration_unwritable_out_dir(bad_root, unwritable):
    result = call(REGISTRATION, ["--root_path", bad_root, "--ids", "good_a", "--out_dir",
                                 unwritable])
    assert_one_line_error(result, "--out_dir", str(unwritable), "not writable")


@pytest.mark.parametrize("script", ["registration", "resample"])
def test_an_out_dir_that_is_a_dangling_link_or_a_file(bad_root, tmp_path, script):
    """The output folder is a link to a missing folder (a link committed on another machine)
    or a file: one line naming it, before any work."""
    link, plain = tmp_path / "LA_half", tmp_path / "a_file"
    link.symlink_to(tmp_path / "gone" / "LA_half")
    plain.write_text("x")
    fn, base = ((REGISTRATION, ["--root_path", bad_root, "--ids", "good_a"])
                if script == "registration" else
                (RESAMPLE, ["--root_path", bad_root, "--lists_dir",
                            write_list(tmp_path / "lists", "train.list", ["good_a"]).parent,
                            "--splits", "train", "--no_progress"]))
    assert_one_line_error(call(fn, base + ["--out_dir", link]), f"--out_dir {link}: a link to "
                          f"{tmp_path / 'gone' / 'LA_half'}, which does not exist")
    assert_one_line_error(call(fn, base + ["--out_dir", plain]),
                          f"--out_dir {plain}: exists and is not a folder")
    assert not (tmp_path / "gone").exists()


# =============================================================================
# training (code/train.py)


def _train_argv(root, tmp: Path, ids, *extra, labelnum=None) -> list:
    lists = tmp / "lists"
    write_list(lists, "train.list", ids)
    return ["--root_path", root, "--lists_dir", lists, "--out_root", tmp / "runs",
            "--exp", "run", "--labelnum", str(labelnum or len(ids)), *TRAIN_FAST, *extra]


@pytest.mark.parametrize("kind,message", [*BAD_H5.items(), ("missing", "unknown case ID(s)")])
def test_train_bad_labeled_case(bad_root, tmp_path, kind, message):
    text = assert_one_line_error(call(TRAIN, _train_argv(bad_root, tmp_path, ["good_a", kind])),
                                 message)
    if kind == "missing":
        assert str(tmp_path / "lists" / "train.list") in text
    else:
        assert str(bad_root / f"{kind}.h5") in text
    assert not (tmp_path / "runs" / "run" / "last.pth").exists()


@pytest.mark.parametrize("kind", ["corrupt", "image_4d", "nan"])
def test_train_bad_unlabeled_case(bad_root, tmp_path, kind):
    argv = _train_argv(bad_root, tmp_path, ["good_a", "good_b", kind], "--method", "mt",
                       labelnum=1)
    assert_one_line_error(call(TRAIN, argv), str(bad_root / f"{kind}.h5"), BAD_H5[kind])


@pytest.mark.parametrize("kind", ["corrupt", "label_classes", "empty_label"])
def test_train_bad_validation_case_fails_before_training(bad_root, tmp_path, kind):
    """A broken validation file fails at start-up, not at the first validation hours in."""
    lists = tmp_path / "lists"
    val = write_list(lists, "val.list", [kind])
    argv = _train_argv(bad_root, tmp_path, ["good_a", "good_b", kind], labelnum=1)
    argv[argv.index("--val_list") + 1] = str(val)
    assert_one_line_error(call(TRAIN, argv), str(bad_root / f"{kind}.h5"), BAD_H5[kind])
    assert not (tmp_path / "runs" / "run" / "metrics.jsonl").exists()  # not one step done


def test_train_list_and_argument_errors(bad_root, tmp_path):
    lists = tmp_path / "lists"
    catalogue = [
        (["good_a", "good_b", "good_a"], [], "duplicated case ID(s) good_a"),
        (["good_a", "good_b"], ["--labelnum", "3"], "--labelnum 3: must be between 1 and 2"),
        (["good_a", "good_b"], ["--val_list", str(write_list(lists, "v.list", ["ghost"]))],
         "unknown case ID(s)"),
        (["good_a", "good_b"], ["--val_list", str(write_list(lists, "w.list", ["small"]))],
         "ID(s) not in the train list: small"),
        (["good_a", "good_b"], ["--method", "mt", "--labeled_bs", "4", "--labelnum", "1"],
         "--labeled_bs 4 must be between 1 and --batch_size - 1"),
        (["good_a", "good_b"], ["--method", "mt", "--labeled_bs", "5", "--labelnum", "1"],
         "--labeled_bs 5"),
        (["good_a", "good_b"], ["--patch_size", "30", "32", "16"], "multiple of 16"),
        (["good_a", "good_b"], ["--label_source", "coarse"], "--coarse_dir is required"),
        (["good_a", "good_b"], ["--label_source", "coarse", "--coarse_dir", str(tmp_path / "x")],
         "--coarse_dir"),
    ]
    for ids, extra, message in catalogue:
        argv = _train_argv(bad_root, tmp_path, ids) + extra
        assert_one_line_error(call(TRAIN, argv), message)


def _coarse(path: Path, lab: np.ndarray, **override) -> None:
    arrays = {"label": lab, "label_a": lab, "label_b": lab,
              "weight": np.ones(lab.shape, np.float32), "annotation": lab}
    arrays.update(override)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if v is not None:
                f.create_dataset(k, data=v)
        if "annotation" in f:
            f["annotation"].attrs["axes"] = [2, 1]
            f["annotation"].attrs["indices"] = [3, 4]


def test_train_bad_coarse_labels(bad_root, cases, tmp_path):
    _, lab = cases["good_a"]
    cdir = tmp_path / "coarse"
    cdir.mkdir()
    nan_w = np.ones(lab.shape, np.float32)
    nan_w[0, 0, 0] = np.nan
    catalogue = {
        "missing": (None, "coarse label file not found"),
        "corrupt": ("corrupt", "corrupt or unreadable coarse label file"),
        "keys": ({"weight": None}, "missing h5 key(s) weight"),
        "shape": ({"label": lab[:-1], "label_a": lab[:-1], "label_b": lab[:-1],
                   "weight": nan_w[:-1] * 0, "annotation": lab[:-1]},
                  "does not match image shape"),
        "planes": ({"label_b": lab[:, :, :-1]}, "do not have the label's shape"),
        "values": ({"label": lab * 2}, "'label' holds values other than 0/1"),
        "weight": ({"weight": nan_w}, "'weight' must lie in [0, 1]"),
        "empty": ({"label": np.zeros_like(lab)}, "coarse 'label' holds no foreground voxel"),
    }
    for name, (override, message) in catalogue.items():
        d = cdir / name
        d.mkdir()
        if override == "corrupt":
            (d / "good_a.h5").write_bytes(b"garbage" * 30)
        elif override is not None:
            _coarse(d / "good_a.h5", lab, **override)
        argv = _train_argv(bad_root, tmp_path / name, ["good_a"], "--label_source", "coarse",
                           "--coarse_dir", d, "--confidence_weighting")
        assert_one_line_error(call(TRAIN, argv), str(d / "good_a.h5"), message)


@pytest.fixture(scope="module")
def trained_run(bad_root, tmp_path_factory) -> Path:
    """A finished one-iteration run (n_filters 4): runs/run/{last,best}.pth, config.json."""
    tmp = tmp_path_factory.mktemp("trained")
    rc, _, err = call(TRAIN, _train_argv(bad_root, tmp, ["good_a", "good_b"]))
    assert rc == 0, err
    return tmp / "runs" / "run"


def _copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / "run"
    shutil.copytree(run, dst)
    return dst


def test_train_resume_with_other_architecture_damages_nothing(bad_root, trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path)
    before = tree_digest(run)
    argv = _train_argv(bad_root, tmp_path, ["good_a", "good_b"], "--resume")
    argv[argv.index("--n_filters") + 1] = "8"
    assert_one_line_error(call(TRAIN, argv), "--resume", str(run / "last.pth"),
                          "n_filters 4 (checkpoint) vs 8")
    assert tree_digest(run) == before  # last.pth, config.json, log.txt, ... byte for byte
    # without --resume the run is refused too, and still untouched
    argv = _train_argv(bad_root, tmp_path, ["good_a", "good_b"])
    assert_one_line_error(call(TRAIN, argv), str(run), "already holds a run")
    assert tree_digest(run) == before


@pytest.mark.parametrize("flags,message", [
    (["--seed", "7"], "seed 1337 (checkpoint) vs 7"),
    (["--base_lr", "0.02"], "base_lr 0.01 (checkpoint) vs 0.02"),
    (["--dice", "per_sample_linear"],  # a setting of sup's own
     "dice 'pooled_squared' (checkpoint) vs 'per_sample_linear'"),
])
def test_train_resume_with_other_training_settings_is_refused(bad_root, trained_run, tmp_path,
                                                              flags, message):
    """A --resume that would train the rest of the run otherwise (one run made of two) is
    refused in one line and changes nothing; a setting the method does not read is free."""
    run = _copy_run(trained_run, tmp_path)
    before = tree_digest(run)
    argv = _train_argv(bad_root, tmp_path, ["good_a", "good_b"], "--resume", *flags)
    assert_one_line_error(call(TRAIN, argv), "--resume", str(run / "last.pth"), message)
    assert tree_digest(run) == before
    if flags[0] == "--seed":  # once: UA-MT's passes mean nothing to a sup run
        argv = _train_argv(bad_root, tmp_path, ["good_a", "good_b"], "--resume",
                           "--uamt_passes", "2")
        rc, _, err = call(TRAIN, argv)
        assert rc == 0, err


@pytest.mark.parametrize("bad,message", [
    ("foreign", "not a CoGRNet checkpoint"),
    ("corrupt", "corrupt or unreadable checkpoint"),
])
def test_train_resume_from_bad_last_pth(bad_root, trained_run, tmp_path, ckpts, bad, message):
    run = _copy_run(trained_run, tmp_path)
    shutil.copyfile(ckpts[bad], run / "last.pth")
    before = tree_digest(run)
    argv = _train_argv(bad_root, tmp_path, ["good_a", "good_b"], "--resume")
    assert_one_line_error(call(TRAIN, argv), str(run / "last.pth"), message)
    assert tree_digest(run) == before


def test_train_unwritable_out_root(bad_root, tmp_path, unwritable):
    argv = _train_argv(bad_root, tmp_path, ["good_a"])
    argv[argv.index("--out_root") + 1] = str(unwritable)
    assert_one_line_error(call(TRAIN, argv), str(unwritable), "not writable")


def test_train_debug_shows_the_traceback(bad_root, tmp_path):
    rc, out, err = call(TRAIN, _train_argv(bad_root, tmp_path, ["good_a", "corrupt"]) +
                        ["--debug"])
    assert rc == 2 and "Traceback" in err and "corrupt or unreadable h5 file" in err


def test_train_volume_smaller_than_the_patch_is_zero_padded(bad_root, tmp_path):
    rc, _, err = call(TRAIN, _train_argv(bad_root, tmp_path, ["good_a", "small"]))
    assert rc == 0, err
    log = (tmp_path / "runs" / "run" / "log.txt").read_text()
    assert "zero-padded" in log and "small (20, 20, 10)" in log
    assert (tmp_path / "runs" / "run" / "last.pth").is_file()


# =============================================================================
# test.py


@pytest.fixture(scope="module")
def test_run(bad_root, ckpts, tmp_path_factory):
    """One test.py run over the good case, the small one and every bad h5 file."""
    tmp = tmp_path_factory.mktemp("test_run")
    ids = ["good_a", "small", *BAD_H5]
    lst = write_list(tmp, "eval.list", ids)
    out = tmp / "out"
    result = call(TEST, ["--root_path", bad_root, "--split", lst, "--checkpoint", ckpts["good"],
                         "--overlap", "0.5", "--device", "cpu", "--no_progress",
                         "--save_nifti", "--out_dir", out])
    return result, out


@pytest.mark.parametrize("kind,message", list(BAD_H5.items()))
def test_test_reports_each_bad_case_and_goes_on(test_run, bad_root, kind, message):
    (rc, out, err), _ = test_run
    assert rc == 1 and "Traceback" not in out + err
    lines = [ln for ln in error_lines(err) if ln.startswith(f"error: case {kind}:")]
    assert len(lines) == 1 and message in lines[0] and str(bad_root / f"{kind}.h5") in lines[0]


def test_test_scores_the_good_and_the_small_case(test_run):
    (_, stdout, _), out = test_run
    s = json.loads((out / "summary.json").read_text())
    assert s["n_cases"] == 2 and len(s["failed"]) == len(BAD_H5)
    assert [c["case"] for c in s["cases"] if "dice" in c] == ["good_a", "small"]
    for cid in ("good_a", "small"):
        assert (out / "pred" / f"{cid}.nii.gz").is_file()
    # one axis convention (cogrnet.data.nifti): the file's size is the (X, Y, Z) shape
    assert sitk.ReadImage(str(out / "pred" / "small.nii.gz")).GetSize() == (20, 20, 10)
    assert f"{len(BAD_H5)} failed case(s)" in stdout


@pytest.mark.parametrize("name,message", BAD_CKPT)
def test_test_bad_checkpoints_damage_nothing(bad_root, ckpts, tmp_path, name, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"an": "earlier result"}\n')
    (out / "per_case.csv").write_text("case,dice\nx,0.9\n")
    before = tree_digest(out)
    path = _ckpt_path(ckpts, name, tmp_path)
    result = call(TEST, ["--root_path", bad_root, "--split", write_list(tmp_path, "t.list",
                                                                        ["good_a"]),
                         "--checkpoint", path, "--device", "cpu", "--no_progress",
                         "--out_dir", out])
    assert_one_line_error(result, str(path), message)
    assert tree_digest(out) == before


@pytest.mark.parametrize("ids,message", [
    (["good_a", "ghost"], "unknown case ID(s) with no h5 file"),
    (["good_a", "good_a"], "duplicated case ID(s) good_a"),
])
def test_test_bad_lists(bad_root, ckpts, tmp_path, ids, message):
    lst = write_list(tmp_path, "t.list", ids)
    result = call(TEST, ["--root_path", bad_root, "--split", lst, "--checkpoint", ckpts["good"],
                         "--device", "cpu", "--no_progress", "--out_dir", tmp_path / "out"])
    assert_one_line_error(result, str(lst), message)
    assert not (tmp_path / "out").exists()


def test_test_unwritable_out_dir_fails_before_inference(bad_root, ckpts, tmp_path, unwritable,
                                                        monkeypatch):
    import cogrnet.evaluation.run as ev

    def no_inference(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("inference ran although the output folder is not writable")

    monkeypatch.setattr(ev, "evaluate_model", no_inference)
    lst = write_list(tmp_path, "t.list", ["good_a"])
    result = call(TEST, ["--root_path", bad_root, "--split", lst, "--checkpoint", ckpts["good"],
                         "--device", "cpu", "--no_progress", "--out_dir", unwritable])
    assert_one_line_error(result, "--out_dir", str(unwritable), "not writable")


def test_test_pred_dir_bad_files(bad_root, cases, tmp_path):
    from cogrnet.data.nifti import write_prediction

    lst = write_list(tmp_path, "t.list", ["good_a", "good_b", "small", "empty_label"])
    preds = tmp_path / "preds"
    write_prediction(cases["good_a"][1], preds / "good_a.nii.gz")
    (preds / "good_b.nii.gz").write_bytes(b"\x1f\x8b garbage")
    write_prediction(cases["small"][1] * 3, preds / "small.nii.gz")
    write_prediction(cases["good_a"][1], preds / "empty_label.nii.gz")
    out = tmp_path / "out"
    rc, o, err = call(TEST, ["--root_path", bad_root, "--split", lst, "--pred_dir", preds,
                             "--out_dir", out, "--no_progress"])
    assert rc == 1 and "Traceback" not in o + err
    lines = error_lines(err)
    expect = {"good_b": (preds / "good_b.nii.gz", "corrupt or unreadable prediction file"),
              "small": (preds / "small.nii.gz", "prediction values must be integers in 0..1"),
              "empty_label": (bad_root / "empty_label.h5", "label holds no foreground voxel")}
    for cid, (path, message) in expect.items():
        mine = [ln for ln in lines if ln.startswith(f"error: case {cid}:")]
        assert len(mine) == 1 and str(path) in mine[0] and message in mine[0], err
    s = json.loads((out / "summary.json").read_text())
    assert s["n_cases"] == 1 and s["cases"][0]["dice"] == 1.0
    # a --pred_dir that does not exist is an argument error
    assert_one_line_error(call(TEST, ["--root_path", bad_root, "--split", lst, "--pred_dir",
                                      tmp_path / "nope", "--no_progress"]),
                          "--pred_dir", "folder not found")


def test_test_debug_shows_the_traceback(bad_root, tmp_path):
    rc, _, err = call(TEST, ["--root_path", bad_root, "--checkpoint", tmp_path / "none.pth",
                             "--debug"])
    assert rc == 2 and "Traceback" in err and err.strip().endswith("checkpoint not found")


def test_test_command_line_subprocess(bad_root, ckpts, tmp_path):
    """The real command line: one line on stderr, status 2, no traceback."""
    res = subprocess.run([sys.executable, str(CODE / "test.py"), "--root_path", str(bad_root),
                          "--checkpoint", str(ckpts["foreign"]), "--device", "cpu"],
                         capture_output=True, text=True, timeout=120)
    assert_one_line_error((res.returncode, res.stdout, res.stderr), str(ckpts["foreign"]),
                          "not a CoGRNet checkpoint")
    assert res.returncode == 2


# =============================================================================
# predict.py


def _image(path: Path, arr_zyx: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr_zyx), str(path))
    return path


def _good_zyx() -> np.ndarray:
    arr = np.zeros((12, 20, 28), np.float32)
    arr[3:8, 5:12, 8:20] = 5.0
    return arr


def _bad_input(kind: str, d: Path) -> tuple[Path, str]:
    if kind == "missing":
        return d / "missing.nii.gz", "image file not found"
    if kind == "corrupt":
        p = d / "corrupt.nii.gz"
        p.write_bytes(b"\x1f\x8b\x08 this is no NIfTI" * 8)
        return p, "corrupt or unreadable image file"
    if kind == "not_an_image":
        p = d / "notes.mha"
        p.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4\nElementType = MET_FLOAT\n")
        return p, "corrupt or unreadable image file"
    if kind == "2d":
        return _image(d / "flat.nii.gz", _good_zyx()[0]), "image must be 3D, got 2D"
    if kind == "4d":
        vol = sitk.GetImageFromArray(_good_zyx())
        p = d / "series.nii.gz"
        sitk.WriteImage(sitk.JoinSeries([vol, vol]), str(p))
        return p, "image must be 3D, got 4D"
    if kind == "vector":
        p = d / "rgb.mha"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.float32),
                                               isVector=True), str(p))
        return p, "image must hold one value per voxel"
    if kind in ("nan", "inf"):
        arr = _good_zyx()
        arr[1, 2, 3] = np.nan if kind == "nan" else np.inf
        return _image(d / f"{kind}.mha", arr), "NaN/inf"
    raise ValueError(kind)  # pragma: no cover


@pytest.mark.parametrize("kind", ["missing", "corrupt", "not_an_image", "2d", "4d", "vector",
                                  "nan", "inf"])
def test_predict_bad_inputs_keep_existing_output(ckpts, tmp_path, kind):
    src, message = _bad_input(kind, tmp_path)
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"an earlier mask")
    result = call(PREDICT, ["--checkpoint", ckpts["good"], "--input", src, "--output", out,
                            "--device", "cpu"])
    assert_one_line_error(result, str(src), message)
    assert out.read_bytes() == b"an earlier mask"


@pytest.mark.parametrize("name,message", BAD_CKPT)
def test_predict_bad_checkpoints(ckpts, tmp_path, name, message):
    src = _image(tmp_path / "scan.nii.gz", _good_zyx())
    path = _ckpt_path(ckpts, name, tmp_path)
    result = call(PREDICT, ["--checkpoint", path, "--input", src, "--output",
                            tmp_path / "o.nii.gz", "--device", "cpu"])
    assert_one_line_error(result, str(path), message)
    assert not (tmp_path / "o.nii.gz").exists()


def test_predict_output_errors(ckpts, tmp_path, unwritable):
    src = _image(tmp_path / "scan.nii.gz", _good_zyx())
    base = ["--checkpoint", ckpts["good"], "--device", "cpu", "--overlap", "0.5"]
    # an output folder that cannot be written
    assert_one_line_error(call(PREDICT, base + ["--input", src, "--output",
                                                unwritable / "m.nii.gz"]),
                          "--out_dir", str(unwritable), "not writable")
    assert_one_line_error(call(PREDICT, base + ["--input", src, "--output", unwritable]),
                          "--out_dir", str(unwritable), "not writable")
    # an output file name that is an existing folder
    (tmp_path / "taken.nii.gz").mkdir()
    assert_one_line_error(call(PREDICT, base + ["--input", src, "--output",
                                                tmp_path / "taken.nii.gz"]),
                          str(tmp_path / "taken.nii.gz"), "is a folder")
    # two inputs, one file output; two inputs of one name
    other = _image(tmp_path / "b" / "scan.nii.gz", _good_zyx())
    assert_one_line_error(call(PREDICT, base + ["--input", src, other, "--output",
                                                tmp_path / "m.nii.gz"]),
                          "--out_dir must be a folder")
    assert_one_line_error(call(PREDICT, base + ["--input", src, other, "--output",
                                                tmp_path / "masks"]),
                          "--input: two inputs share a name")
    assert_one_line_error(call(PREDICT, base + ["--input", src, "--output", tmp_path / "m.nii.gz",
                                                "--window", "200", "100"]), "--window 200.0 100.0")


def test_predict_writes_atomically_and_a_good_run_replaces_the_mask(ckpts, tmp_path):
    src = _image(tmp_path / "scan.nii.gz", _good_zyx())
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"an earlier mask")
    rc, _, err = call(PREDICT, ["--checkpoint", ckpts["good"], "--input", src, "--output", out,
                                "--device", "cpu", "--overlap", "0.5"])
    assert rc == 0, err
    assert sitk.ReadImage(str(out)).GetSize() == (28, 20, 12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "scan.nii.gz"]


# =============================================================================
# preprocess.py (raw KiTS19 NIfTI -> h5)


@pytest.fixture(scope="module")
def raw_kits(tmp_path_factory):
    """A raw KiTS19 folder: one good case and one per problem (id -> (file, message))."""
    from test_preprocess import RAW_SHAPE, make_ct, write_kits, write_nifti

    raw = tmp_path_factory.mktemp("raw_kits")
    good = write_kits(raw, 1)
    bad: dict[str, tuple[str, str]] = {}
    cid = write_kits(raw, 2)
    (raw / cid / "imaging.nii.gz").write_bytes(b"\x1f\x8b not a nifti" * 10)
    bad[cid] = ("imaging.nii.gz", "corrupt or unreadable NIfTI file")
    cid = write_kits(raw, 3)
    write_nifti(raw / cid / "segmentation.nii.gz", make_ct(0, shape=(60, 52, 17))[1], "kits")
    bad[cid] = ("segmentation.nii.gz", "does not match image shape")
    cid = write_kits(raw, 4)
    write_nifti(raw / cid / "segmentation.nii.gz", make_ct(0)[1] * 3, "kits")
    bad[cid] = ("segmentation.nii.gz", "outside 0..2")
    cid = write_kits(raw, 5)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)),
                    str(raw / cid / "imaging.nii.gz"))
    bad[cid] = ("imaging.nii.gz", "NIfTI must be 3D, got 2D")
    cid = write_kits(raw, 6)
    vol = sitk.GetImageFromArray(np.zeros((6, 7, 8), np.int16))
    sitk.WriteImage(sitk.JoinSeries([vol, vol]), str(raw / cid / "imaging.nii.gz"))
    bad[cid] = ("imaging.nii.gz", "NIfTI must be 3D, got 4D")
    cid = write_kits(raw, 7)
    (raw / cid / "segmentation.nii.gz").unlink()
    bad[cid] = ("segmentation.nii.gz", "segmentation file not found")
    cid = write_kits(raw, 8)
    write_nifti(raw / cid / "imaging.nii.gz", np.full(RAW_SHAPE, -1024, np.int16), "kits")
    bad[cid] = ("imaging.nii.gz", "constant")
    bad["case_00099"] = ("imaging.nii.gz", "file not found")      # an unknown ID
    return raw, good, bad


def test_preprocess_reports_each_bad_case_and_keeps_old_outputs(raw_kits, tmp_path):
    raw, good, bad = raw_kits
    out = tmp_path / "h5"
    out.mkdir()
    old = {cid: out / f"{cid}.h5" for cid in list(bad)[:2]}
    for path in old.values():
        path.write_bytes(b"an earlier output")
    rc, o, err = call(PREPROCESS, ["--dataset", "kits", "--raw_dir", raw, "--out_dir", out,
                                   "--lists_dir", "none", "--ids", good, *bad,
                                   "--out_size", "24", "20", "12", "--no_progress",
                                   "--overwrite"])
    assert rc == 1 and "Traceback" not in o + err
    failed = [ln for ln in err.splitlines() if ln.startswith("failed ")]
    assert len(failed) == len(bad), err
    for cid, (fname, message) in bad.items():
        mine = [ln for ln in failed if ln.startswith(f"failed {cid}: ")]
        assert len(mine) == 1 and f"{cid}/{fname}" in mine[0] and message in mine[0], err
    assert (out / f"{good}.h5").is_file()
    for path in old.values():
        assert path.read_bytes() == b"an earlier output"
    assert not list(out.glob("*.tmp"))


def test_preprocess_argument_errors(raw_kits, tmp_path, unwritable):
    raw, good, _ = raw_kits
    base = ["--dataset", "kits", "--raw_dir", raw, "--no_progress"]
    assert_one_line_error(call(PREPROCESS, base + ["--ids", good, "--lists_dir", "none",
                                                   "--out_dir", unwritable]),
                          "--out_dir", str(unwritable), "not writable")
    lists = tmp_path / "lists"
    lst = write_list(lists, "train.list", [good, good])
    assert_one_line_error(call(PREPROCESS, base + ["--lists_dir", lists, "--out_dir",
                                                   tmp_path / "o"]),
                          str(lst), "duplicated case ID(s)")
    assert_one_line_error(call(PREPROCESS, base + ["--ids", good, "--workers", "0",
                                                   "--out_dir", tmp_path / "o"]), "--workers")
    assert_one_line_error(call(PREPROCESS, base + ["--ids", good, "--out_size", "0", "4", "4",
                                                   "--out_dir", tmp_path / "o"]), "--out_size")
    assert_one_line_error(call(PREPROCESS, ["--dataset", "kits", "--raw_dir", tmp_path / "nope",
                                            "--out_dir", tmp_path / "o", "--all"]),
                          str(tmp_path / "nope"), "raw data folder not found")


def test_a_closed_stdout_ends_a_script_quietly():
    """A script whose reader goes away (``| head``) stops with 141 and nothing on stderr,
    not a BrokenPipeError traceback."""
    code = ("import sys; from cogrnet.errors import run_cli; "
            "sys.exit(run_cli(lambda argv: [print('x' * 99) for _ in range(200000)] and 0))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(CODE)})
    assert proc.stdout.readline().strip() == b"x" * 99
    proc.stdout.close()  # 20 MB do not fit a pipe's buffer: the script meets the closed end
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_a_broken_pipe_other_than_stdout_is_not_hidden():
    """A broken pipe of something else (a worker's pipe, a socket) still fails loudly."""
    code = ("import os, sys; from cogrnet.errors import run_cli\n"
            "def main(argv):\n"
            "    r, w = os.pipe(); os.close(r); os.write(w, b'x')\n"
            "sys.exit(run_cli(main))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(CODE)}, timeout=60)
    assert done.returncode not in (0, 141) and "BrokenPipeError" in done.stderr
