"""Shared fixtures: tiny tensors, seeded RNGs and the public TCGA tables where present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real public TCGA tables and splits beside the checkout; skip where absent."""
    if not (SHARED_DATA / "signatures.csv").is_file():
        pytest.skip("../shared/data is absent: the real TCGA tables and splits are not beside this checkout")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tensors this small only lose to intra-op threads (5x slower on a busy 2-core machine, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
