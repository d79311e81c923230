"""FeatureStore: CLAM h5 and pt files, per-patient concatenation in table order, the in-memory cache, bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bench.data.features import BagCache, FeatureStore
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
    cached, uncached = FeatureStore(folder, dim=DIM, cache=BagCache(10**6)), FeatureStore(folder, dim=DIM)
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


def test_width_comes_from_the_first_file_and_binds_every_later_one(tmp_path, rng):
    """Any encoder's width works (here 12); a later file of another width names both widths, its file and the first."""
    write_h5(tmp_path, "a", rng.normal(size=(3, 12)).astype(np.float32))
    write_h5(tmp_path, "b", rng.normal(size=(2, 12)).astype(np.float32))
    write_pt(tmp_path, "c", torch.ones(4, 8))
    store = FeatureStore(tmp_path)
    assert store.dim is None
    assert store.bag("P", ["a.svs", "b.svs"]).shape == (5, 12) and store.dim == 12
    with pytest.raises(BenchError) as err:
        store.bag("Q", ["c.svs"])
    text = str(err.value)
    assert "shape (4, 8); expected [N, 12]" in text and "slide c.svs, patient Q" in text
    assert str(tmp_path / "pt_files" / "c.pt") in text and str(tmp_path / "h5_files" / "a.h5") in text
    with pytest.raises(BenchError, match=r"expected \[N, 12\]"):  # the header pass finds it without reading a bag
        FeatureStore(tmp_path).index({"P": ["a.svs"], "Q": ["c.svs"]})


def test_float16_files_are_read_as_float32(tmp_path, rng):
    half = rng.normal(size=(3, DIM)).astype(np.float16)
    write_h5(tmp_path, "h", half)
    write_pt(tmp_path, "p", torch.from_numpy(half))
    write_pt(tmp_path, "q", torch.from_numpy(half.astype(np.float32)).bfloat16())
    store = FeatureStore(tmp_path)
    for slide in ("h.svs", "p.svs"):
        bag = store.bag("P", [slide])
        assert bag.dtype == np.float32 and np.array_equal(bag, half.astype(np.float32))
    assert store.bag("P", ["q.svs"]).dtype == np.float32
    assert store.index({"P": ["h.svs", "p.svs", "q.svs"]}) == {"P": 9}


@pytest.mark.parametrize(("dtype", "advice"), [(np.float64, "Convert it to float32"), (np.int64, "Integers are not"),
                                               (np.uint8, "Integers are not")])
def test_float64_and_integer_h5_features_are_refused_with_advice(tmp_path, dtype, advice):
    path = write_h5(tmp_path, "s", np.ones((2, DIM), dtype))
    for read in (lambda s: s.bag("P", ["s.svs"]), lambda s: s.index({"P": ["s.svs"]})):
        with pytest.raises(BenchError) as err:
            read(FeatureStore(tmp_path))
        assert f"{path} (slide s.svs, patient P) stores {np.dtype(dtype).name} features" in str(err.value)
        assert advice in str(err.value)


def test_cache_keeps_what_fits_and_evicts_only_other_folders_bags():
    bag = np.zeros((10, DIM), np.float32)  # 320 bytes
    cache = BagCache(int(2.5 * bag.nbytes))
    cache.put(("f", "a"), bag)
    cache.put(("g", "x"), bag.copy())
    assert cache.get(("f", "a")) is bag  # g's x is now the least recently used
    cache.put(("f", "b"), bag.copy())  # no room: another folder's bag gives way
    assert cache.get(("g", "x")) is None and cache.get(("f", "b")) is not None and cache.nbytes == 2 * bag.nbytes
    cache.put(("f", "c"), bag.copy())  # no room, and only f's own bags could free it: c is not kept, a and b stay
    assert cache.get(("f", "c")) is None and cache.get(("f", "a")) is bag and len(cache) == 2
    cache.put(("f", "small"), np.zeros((2, DIM), np.float32))  # what still fits is kept
    assert cache.get(("f", "small")) is not None and cache.nbytes == 2 * bag.nbytes + 2 * DIM * 4
    cache.put(("f", "big"), np.zeros((30, DIM), np.float32))  # larger than the whole budget: never kept
    assert cache.get(("f", "big")) is None and len(cache) == 3
    cache.put(("f", "a"), np.zeros((5, DIM), np.float32))  # replacing a bag counts only the new one
    assert cache.nbytes == bag.nbytes + 2 * DIM * 4 + 5 * DIM * 4
    cache.put(("g", "y"), np.zeros((1, DIM), np.float32))
    cache.release("f")
    assert len(cache) == 1 and cache.get(("g", "y")) is not None and cache.nbytes == DIM * 4


def test_budget_is_never_exceeded_and_bytes_add_up(rng):
    """Random bags of random sizes from three folders, read, replaced and released: the held bytes never pass the
    budget and always equal the bags held."""
    cache = BagCache(5_000)
    for step in range(2_000):
        folder, case = f"f{rng.integers(3)}", f"c{rng.integers(40)}"
        if rng.random() < 0.01:
            cache.release(folder)
        elif cache.get((folder, case)) is None or rng.random() < 0.05:
            cache.put((folder, case), np.zeros(int(rng.integers(1, 2_000)), np.uint8))
        assert cache.nbytes <= cache.max_bytes
        assert cache.nbytes == sum(b.nbytes for b in cache._bags.values())


@pytest.fixture
def cohort(tmp_path, rng):
    """40 patients of 6-patch bags (one h5 slide each, float16 as real features are stored)."""
    patients = {}
    for i in range(40):
        write_h5(tmp_path, f"s{i}", rng.standard_normal((6, DIM)).astype(np.float16))
        patients[f"P{i}"] = [f"s{i}.svs"]
    return tmp_path, patients


@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_shuffled_epochs_hit_the_caches_share_of_the_cohort(cohort, rng, share):
    """Every epoch after the first draws the bags in a new order and finds the kept ones: the cache's share."""
    folder, patients = cohort
    bag_bytes = 6 * DIM * 4
    store = FeatureStore(folder, dim=DIM, cache=BagCache(int(share * len(patients) * bag_bytes)))
    cases = list(patients)
    hits = []
    for epoch in range(4):
        hits.append(0)
        for i in rng.permutation(len(cases)):
            hits[-1] += store.cache.get((str(folder), cases[i])) is not None
            store.bag(cases[i], patients[cases[i]])
    assert hits[0] == 0 and hits[1:] == [int(share * len(cases))] * 3


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_cached_bag_equals_a_read_one(cohort, rng, dtype):
    """Over shuffled epochs through a cache of half the cohort, hit or miss, every bag equals the uncached
    store's (float16 holding rounds both alike)."""
    folder, patients = cohort
    cached = FeatureStore(folder, dim=DIM, cache=BagCache(len(patients) * 6 * DIM * 2), dtype=dtype)
    uncached = FeatureStore(folder, dim=DIM, dtype=dtype)
    cases = list(patients)
    for _ in range(3):
        for i in rng.permutation(len(cases)):
            got = cached.bag(cases[i], patients[cases[i]])
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, uncached.bag(cases[i], patients[cases[i]]))
    assert len(cached.cache) > 0


def test_float16_cache_halves_the_bytes_and_rounds_every_bag_alike(bags):
    """The cache's size never changes a result: a float16 store rounds a bag whether it keeps it or not."""
    folder, b, a = bags
    slides = ["TCGA-P-DX1.b.svs", "TCGA-P-DX2.a.svs"]
    half, full = BagCache(10**6), BagCache(10**6)
    rounded = FeatureStore(folder, cache=half, dtype="float16").bag("P", slides)
    exact = FeatureStore(folder, cache=full).bag("P", slides)
    assert rounded.dtype == np.float32 and half.nbytes * 2 == full.nbytes == exact.nbytes
    np.testing.assert_array_equal(rounded, np.concatenate([b, a]).astype(np.float16).astype(np.float32))
    assert not np.array_equal(rounded, exact)
    np.testing.assert_array_equal(FeatureStore(folder, dtype="float16").bag("P", slides), rounded)  # no cache


def test_bags_are_read_on_access_and_sized_from_headers(bags):
    folder, b, a = bags
    store = FeatureStore(folder, cache=BagCache(10**6))
    lazy = store.bags(["P", "R"], [["TCGA-P-DX1.b.svs", "TCGA-P-DX2.a.svs"], ["TCGA-P-DX2.a.svs"]])
    assert len(lazy) == 2 and lazy.sizes().tolist() == [5, 2] and len(store.cache) == 0  # headers only
    np.testing.assert_array_equal(lazy.take([1])[0], a)
    assert len(store.cache) == 1
    store.release()
    assert len(store.cache) == 0


@pytest.mark.parametrize("hold", ["float32", "float16"])
def test_mixed_stored_dtypes_read_into_one_bag_as_a_concatenation_would(tmp_path, rng, hold):
    """float32 h5, float16 h5, an empty slide and a bfloat16 pt, read in place, equal concatenating each file
    cast on its own; holding float16 rounds as numpy's astype does."""
    parts = [rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float16),
             np.zeros((0, 8), np.float32)]
    write_h5(tmp_path, "a", parts[0])
    write_h5(tmp_path, "b", parts[1])
    write_h5(tmp_path, "c", parts[2])
    pt = torch.randn(4, 8).bfloat16()
    write_pt(tmp_path, "d", pt)
    expected = np.concatenate([p.astype(np.float32) for p in parts] + [pt.float().numpy()])
    if hold == "float16":
        expected = expected.astype(np.float16).astype(np.float32)
    got = FeatureStore(tmp_path, dtype=hold).bag("P1", ["a.svs", "b.svs", "c.svs", "d.svs"])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_nan_in_a_later_slide_names_that_file(tmp_path, rng):
    write_h5(tmp_path, "a", rng.standard_normal((4, 8)).astype(np.float32))
    bad = rng.standard_normal((3, 8)).astype(np.float16)
    bad[1, 2] = np.nan
    write_h5(tmp_path, "b", bad)
    with pytest.raises(BenchError, match=r"b\.h5 \(slide b\.svs, patient P1\) contains NaN"):
        FeatureStore(tmp_path).bag("P1", ["a.svs", "b.svs"])
