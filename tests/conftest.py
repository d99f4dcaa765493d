"""Shared fixtures. The corpora come from data/raw (fetched by `make test`, from NBLIB_DATA_MIRROR offline)."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# Nobody watches the tests: one progress line per epoch in the executed notebooks (nblib.training.progress).
os.environ.setdefault("NBLIB_PROGRESS", "lines")


@pytest.fixture(scope="session")
def hotel():
    from nblib import data

    return data.load_hotel(verbose=False)


@pytest.fixture(scope="session")
def hotel_split(hotel):
    from nblib import data

    return data.split(hotel)


@pytest.fixture()
def runs_tmp(tmp_path, monkeypatch):
    """Send records and checkpoints to a temporary runs folder."""
    monkeypatch.setenv("NBLIB_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Tiny random BERT and GPT-2 checkpoint folders with a BERT-style Chinese vocabulary."""
    from tiny_checkpoints import make_tiny_checkpoints

    return make_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))
