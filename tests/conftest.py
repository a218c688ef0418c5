"""Shared fixtures: the library on sys.path, tiny phantom datasets, the real LA root."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE = REPO / "code"
sys.path.insert(0, str(CODE))
LA_ROOT = Path(os.environ.get("COGRNET_LA_ROOT", REPO.parent / "shared" / "data" / "LA"))

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """Six small phantom cases (4 train, 2 test) in the UA-MT layout, made once."""
    from cogrnet.data.phantom import make_phantom_set

    root = tmp_path_factory.mktemp("phantom")
    make_phantom_set(root, n_train=4, n_test=2, base_shape=(40, 36, 24), jitter=4, seed=0)
    return root


@pytest.fixture(scope="session")
def la_root() -> Path:
    """The real LA training root from ../shared; skips the test when it is absent."""
    if not (LA_ROOT / "train.list").is_file():
        pytest.skip(f"real LA data not found at {LA_ROOT}")
    return LA_ROOT


def pytest_collection_modifyitems(config, items):
    """Every test that reads the real LA data carries the ``la`` marker (``-m la`` runs
    just those; ``-m "not la"`` leaves them out)."""
    for item in items:
        if "la_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.la)
