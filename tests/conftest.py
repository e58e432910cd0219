"""Shared fixtures: where the real datasets are, and one decode cache per test session."""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir():
    """The real datasets: $KERAS_TIE_DATA_DIR, else <repo>/../shared/data; skips if absent."""
    path = pathlib.Path(os.environ.get("KERAS_TIE_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path}")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A decode cache shared by the whole session, so CIFAR-10's PNGs are decoded once."""
    return tmp_path_factory.mktemp("keras_tie_cache")
