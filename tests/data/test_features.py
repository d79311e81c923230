"""FeatureStore: CLAM h5 and pt files, per-patient concatenation in table order, the in-memory cache, bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bench.data.features import FeatureStore
from bench.errors import BenchError

DIM = 8  # the store checks width against `dim`; tiny bags keep this fast


def write_h5(folder: Path, stem: str, feats: np.ndarray) -> Path:
    path = folder / "h5_files" / f"{stem}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats)
        f.create_dataset("coords", data=np.zeros((len(feats), 2), np.int32))
    return path


def write_pt(folder: Path, stem: str, feats: torch.Tensor | dict) -> Path:
    path = folder / "pt_files" / f"{stem}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(feats, path)
    return path


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def bags(tmp_path, rng):
    """Patient P has slide `b` as h5 (3 patches) and slide `a` as pt (2 patches)."""
    b = rng.normal(size=(3, DIM)).astype(np.float32)
    a = rng.normal(size=(2, DIM)).astype(np.float32)
    write_h5(tmp_path, "TCGA-P-DX1.b", b)
    write_pt(tmp_path, "TCGA-P-DX2.a", torch.from_numpy(a))
    return tmp_path, b, a


def test_h5_and_pt_concatenate_in_the_given_slide_order(bags):
    folder, b, a = bags
    bag = FeatureStore(folder, dim=DIM).bag("P", ["TCGA-P-DX1.b.svs", "TCGA-P-DX2.a.svs"])
    assert bag.dtype == np.float32 and bag.shape == (5, DIM)
    assert np.array_equal(bag, np.concatenate([b, a]))
    bag = FeatureStore(folder, dim=DIM).bag("P", ["TCGA-P-DX2.a.svs", "TCGA-P-DX1.b.svs"])
    assert np.array_equal(bag, np.concatenate([a, b]))


def test_slide_stem_strips_only_the_svs_suffix(tmp_path, rng):
    """`rstrip('.svs')` would also eat a trailing 's' or 'v' of the UUID; the stem keeps it."""
    feats = rng.normal(size=(2, DIM)).astype(np.float32)
    write_h5(tmp_path, "TCGA-Q-DX1.abcvs", feats)
    assert np.array_equal(FeatureStore(tmp_path, dim=DIM).bag("Q", ["TCGA-Q-DX1.abcvs.svs"]), feats)


def test_h5_is_preferred_when_both_exist(tmp_path):
    write_h5(tmp_path, "s", np.ones((2, DIM), np.float32))
    write_pt(tmp_path, "s", torch.zeros(4, DIM))
    assert FeatureStore(tmp_path, dim=DIM).bag("P", ["s.svs"]).shape == (2, DIM)


def test_cache_serves_the_second_read_without_disk(bags):
    folder, b, a = bags
    slides = ["TCGA-P-DX1.b.svs", "TCGA-P-DX2.a.svs"]
    cached, uncached = FeatureStore(folder, dim=DIM), FeatureStore(folder, dim=DIM, cache=False)
    first = cached.bag("P", slides)
    uncached.bag("P", slides)
    for p in folder.rglob("*.*"):
        p.unlink()
    assert np.array_equal(cached.bag("P", slides), first)
    with pytest.raises(BenchError, match="no feature file for slide TCGA-P-DX1.b.svs of patient P"):
        uncached.bag("P", slides)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: write_h5(d, "s", np.full((2, DIM), np.nan, np.float32)), "NaN or inf"),
    (lambda d: write_pt(d, "s", torch.tensor([[np.inf] * DIM])), "NaN or inf"),
    (lambda d: write_h5(d, "s", np.ones((2, DIM + 1), np.float32)), rf"shape \(2, {DIM + 1}\); expected \[N, {DIM}\]"),
    (lambda d: write_pt(d, "s", torch.ones(DIM)), rf"shape \({DIM},\)"),
    (lambda d: write_h5(d, "s", np.zeros((0, DIM), np.float32)), "patient P has an empty bag"),
    (lambda d: write_bytes(d / "h5_files" / "s.h5", b"not an hdf5 file"), "cannot be read"),
    (lambda d: write_bytes(d / "pt_files" / "s.pt", b"PK\x03\x04 junk"), "cannot be read"),
    (lambda d: write_pt(d, "s", {"features": torch.ones(2, DIM)}), "cannot be read: holds a dict"),
], ids=["h5-nan", "pt-inf", "width", "pt-1d", "empty", "h5-corrupt", "pt-corrupt", "pt-dict"])
def test_bad_feature_files_raise_a_bench_error_naming_slide_and_patient(tmp_path, damage, message):
    damage(tmp_path)
    with pytest.raises(BenchError, match=message) as err:
        FeatureStore(tmp_path, dim=DIM).bag("P", ["s.svs"])
    assert "patient P" in str(err.value)
