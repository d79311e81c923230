"""bench.provenance: the features fingerprint reads a fixed sample of each file's content, not only names and sizes."""

from __future__ import annotations

import hashlib
import shutil

import h5py
import numpy as np

from bench.data import FeatureStore
from bench.provenance import SAMPLE_BLOCK_BYTES, SAMPLE_BLOCKS, content_sample, features_fingerprint

SLIDES = [f"TCGA-XX-{i:04d}-01Z-00-DX1.svs" for i in range(3)]


def encoder_folder(root, seed: int, patches: int = 400, dim: int = 64):
    """CLAM-style h5 files of the same slides, shapes and dtype from another 'encoder' (other random features)."""
    rng = np.random.default_rng(seed)
    (root / "h5_files").mkdir(parents=True)
    for i, slide in enumerate(SLIDES):
        with h5py.File(root / "h5_files" / f"{slide.removesuffix('.svs')}.h5", "w") as f:
            f.create_dataset("features", data=rng.standard_normal((patches + i, dim)).astype(np.float32))
            f.create_dataset("coords", data=np.zeros((patches + i, 2), dtype=np.int64))
    store = FeatureStore(root)
    store.index({f"P{i}": [s] for i, s in enumerate(SLIDES)})
    return store


def test_two_encoders_with_the_same_names_and_sizes_have_different_fingerprints(tmp_path):
    a, b = encoder_folder(tmp_path / "a", seed=0), encoder_folder(tmp_path / "b", seed=1)
    files_a, files_b = sorted((tmp_path / "a").rglob("*.h5")), sorted((tmp_path / "b").rglob("*.h5"))
    assert [p.name for p in files_a] == [p.name for p in files_b]
    assert [p.stat().st_size for p in files_a] == [p.stat().st_size for p in files_b]  # stat alone cannot tell
    fa, fb = features_fingerprint(a, SLIDES), features_fingerprint(b, SLIDES)
    assert fa["features_hash"] != fb["features_hash"]
    assert (fa["features_width"], fa["features_files"]) == (fb["features_width"], fb["features_files"]) == ("64", "3")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")  # the same bytes elsewhere: the same hash (the folder: own tag)
    copy = FeatureStore(tmp_path / "copy", dim=64)
    assert features_fingerprint(copy, SLIDES)["features_hash"] == fa["features_hash"]


def test_the_sample_is_fixed_blocks_from_first_to_last_byte_or_the_whole_small_file(tmp_path):
    path = tmp_path / "f.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 10 * SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES, np.uint8))
    path.write_bytes(bytes(data))
    before = content_sample(path, len(data))
    for offset in (0, len(data) - 1):  # the first and the last byte are always read
        changed = data.copy()
        changed[offset] ^= 0xFF
        path.write_bytes(bytes(changed))
        assert content_sample(path, len(data)) != before
    gap = data.copy()  # a byte between two blocks is not read: a sample, not a checksum of every byte
    gap[SAMPLE_BLOCK_BYTES + 10] ^= 0xFF
    path.write_bytes(bytes(gap))
    assert content_sample(path, len(data)) == before
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 100)
    assert content_sample(small, 100) == hashlib.sha256(b"x" * 100).hexdigest()
