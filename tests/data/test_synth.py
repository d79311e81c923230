"""The synthetic generator: byte-determinism, calibrated censoring, a useful oracle, and the real formats."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.data import COHORTS, DataRoot, FeatureStore, open_cohort
from bench.data.synth import DEFAULT_SCALE, MIN_EVENTS, SPECS, synthesize
from bench.splits import load_folds, read_manifest, sha256_file
from bench.survival import c_index

REPO = Path(__file__).resolve().parents[2]


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, keyed by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> tuple[Path, list[dict]]:
    """All five cohorts at the default seed and scale (~3 s), shared by the tests below."""
    root = tmp_path_factory.mktemp("synth_default")
    return root, synthesize(root, log=lambda _: None)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    kw = dict(cohorts=["blca", "ucec"], scale=0.05, log=lambda _: None)
    synthesize(tmp_path / "a", seed=7, **kw)
    synthesize(tmp_path / "b", seed=7, **kw)
    synthesize(tmp_path / "c", seed=8, **kw)
    a, b, c = (digests(tmp_path / x) for x in "abc")
    assert len(a) > 40 and a == b  # tables, h5 bags, truth, splits, signatures, synth.json
    table = "tables/tcga_blca_all_clean.csv.zip"
    assert a[table] != c[table]
    assert a["truth/tcga_ucec.csv"] != c["truth/tcga_ucec.csv"]


def test_censoring_and_oracle_match_the_targets(default_root):
    _, summaries = default_root
    assert [s["cohort"] for s in summaries] == list(COHORTS)
    for s in summaries:
        spec = SPECS[s["cohort"]]
        assert s["patients"] == round(spec.patients * DEFAULT_SCALE)
        assert abs(s["censoring"] - spec.censoring) <= 0.05, s
        assert 0.7 <= s["oracle_c_index"] <= 0.9, s


def test_specs_mirror_the_real_cohorts():
    """data_formats.md sections 2 and 6, every genomic column kept (sig tables; BRCA/GBMLGG from G-HANet's list)."""
    assert {c: (s.patients, s.censoring) for c, s in SPECS.items()} == {
        "blca": (373, 0.547), "brca": (956, 0.864), "gbmlgg": (569, 0.671), "luad": (453, 0.651), "ucec": (480, 0.844)}
    assert SPECS["blca"].omic_sizes == (94, 334, 521, 468, 1496, 479)
    assert SPECS["luad"].omic_sizes == (89, 334, 534, 471, 1510, 482)
    assert SPECS["ucec"].omic_sizes == (3, 24, 21, 22, 65, 15)


def test_real_loader_reads_every_synthetic_cohort(default_root):
    """Group sizes equal the spec, truth aligns with patients, every slide has an h5 bag, folds verify."""
    root, summaries = default_root
    data = DataRoot(root)
    for s in summaries:
        c = s["cohort"]
        co = open_cohort(data, c)
        assert co.omic_sizes == SPECS[c].omic_sizes
        if c == "ucec":
            assert all(col.endswith("_cnv") for col in co.omics.columns)
        assert len(co.patients) == s["patients"] and int(co.patients["slides"].map(len).sum()) == s["slides"]
        assert co.truth is not None and co.truth.notna().all()
        store = FeatureStore(data.features(c), cache=False)
        assert not store.missing_slides(s for slides in co.patients["slides"] for s in slides)
        case = co.case_ids[0]
        bag = store.bag(case, co.patients.at[case, "slides"])
        assert bag.shape[1] == 1024 and bag.min() >= 0  # post-ReLU like ResNet features
        folds = load_folds(data, c, co.case_ids)  # verified against the manifest's synthetic/ sums
        assert sorted(x for f in folds.values() for x in f.val) == sorted(co.case_ids)


def test_manifest_pins_the_default_synthetic_splits(default_root):
    """The manifest's synthetic/ entries are exactly the files the default run generates."""
    root, _ = default_root
    pinned = {k.removeprefix("synthetic/"): v for k, v in read_manifest().items() if k.startswith("synthetic/")}
    made = {str(p.relative_to(root / "splits")): sha256_file(p) for p in (root / "splits").rglob("*.csv")}
    assert len(made) == 25 and pinned == made


def test_tiny_scales_keep_enough_events_to_cut_bins(tmp_path):
    """UCEC is 84% censored: at scale 0.001 the generator still writes about MIN_EVENTS deaths, not a crash."""
    (s,) = synthesize(tmp_path, ["ucec"], scale=0.001, log=lambda _: None)
    assert s["patients"] == int(np.ceil(MIN_EVENTS / (1 - SPECS["ucec"].censoring)))
    assert round(s["patients"] * (1 - s["censoring"])) >= MIN_EVENTS - 1


def test_cli_prints_the_oracle_c_index(tmp_path):
    """The printed oracle C is the C-index of the written truth against the written labels."""
    out = subprocess.run([sys.executable, "-m", "bench.data", "synth", "--out", str(tmp_path), "--cohorts", "ucec",
                          "--scale", "0.05", "--seed", "3"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    found = re.findall(r"oracle C ([0-9.]+)", out.stdout)
    assert len(found) == 1, out.stdout
    co = open_cohort(DataRoot(tmp_path), "ucec")
    assert float(found[0]) == pytest.approx(c_index(co.patients["time"], co.patients["event"], co.truth), abs=5e-4)
    assert float(found[0]) > 0.6
