"""Shared fixtures: tiny phantom datasets, the real LA root, scripts loaded by path."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE = REPO / "code"
# where the README puts the LA training volumes; CI points COGRNET_LA_ROOT elsewhere (.ci/run)
LA_ROOT = Path(os.environ.get("COGRNET_LA_ROOT", REPO / "data" / "LA"))

try:
    import cogrnet  # noqa: F401  (installed editable by `make setup`)
except ImportError:
    pytest.exit("cogrnet is not installed: run `make setup` or `pip install -e .`", returncode=4)
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def load_script(path: Path) -> ModuleType:
    """An entry script (``code/preprocess.py``, ``scripts/gpu_benchmark.py``, ...) as a module,
    imported by its path once per session (``sys.modules`` key ``_script_<name>``)."""
    name = "_script_" + "_".join(Path(path).resolve().relative_to(REPO).with_suffix("").parts)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """Six small phantom cases (4 train, 2 test) in the UA-MT layout, made once."""
    from cogrnet.prepare.phantom import make_phantom_set

    root = tmp_path_factory.mktemp("phantom")
    make_phantom_set(root, n_train=4, n_test=2, base_shape=(40, 36, 24), jitter=4, seed=0)
    return root


@pytest.fixture(scope="session")
def phantom_coarse(phantom_root, tmp_path_factory):
    """Coarse labels of the first two phantom train cases, made by the registration CLI."""
    from cogrnet.errors import run_cli

    mod = load_script(CODE / "utils" / "registration.py")
    out = tmp_path_factory.mktemp("coarse")
    assert run_cli(mod.main, ["--dataset", "phantom", "--root_path", str(phantom_root), "--split",
                              "train", "--labelnum", "2", "--out_dir", str(out)]) == 0
    return out


@pytest.fixture
def label_reads(monkeypatch) -> list[str]:
    """The case IDs whose dense label is read from disk in this process while the test
    runs, in order (an audit of :class:`cogrnet.data.dataset.CaseStore`, kept out of the
    library)."""
    import cogrnet.data.dataset as dataset

    reads: list[str] = []
    load = dataset.load_h5_case

    def audited(path, case_id=None, with_label=True, *args, **kwargs):
        case = load(path, case_id, with_label, *args, **kwargs)
        if with_label:
            reads.append(case_id)
        return case

    monkeypatch.setattr(dataset, "load_h5_case", audited)
    return reads


@pytest.fixture(scope="session")
def la_root() -> Path:
    """The real LA training root (``COGRNET_LA_ROOT``, default ``data/LA``); skips the test
    when its list or the first listed volume is absent (the lists alone are in the repo)."""
    lst = LA_ROOT / "train.list"
    listed = lst.read_text().split() if lst.is_file() else []
    first = LA_ROOT / "2018LA_Seg_Training Set" / (listed[0] if listed else "-") / "mri_norm2.h5"
    if not first.is_file():
        pytest.skip(f"real LA data not found at {LA_ROOT}")
    return LA_ROOT


def pytest_collection_modifyitems(config, items):
    """Every test that reads the real LA data carries the ``la`` marker (``-m la`` runs
    just those; ``-m "not la"`` leaves them out)."""
    for item in items:
        if "la_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.la)
