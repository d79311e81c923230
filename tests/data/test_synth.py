"""The synthetic generator: byte-determinism, calibrated censoring, a useful oracle, and the real formats."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.data import COHORTS, DataRoot, FeatureStore, open_cohort
from bench.data.synth import (DEFAULT_SCALE, MIN_EVENTS, MIN_PATIENTS, MIN_TEST_EVENTS, SCENARIOS, SPECS, draw_labels,
                               n_patients, synthesize, synthetic_censoring)
from bench.data.folds import load_folds, pinned_sums
from bench.splits import read_manifest, sha256_file
from bench.survival import c_index

REPO = Path(__file__).resolve().parents[2]


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, keyed by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> tuple[Path, list[dict]]:
    """All five cohorts at the default settings (~3 s), shared by the tests below."""
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
    """Half the real censoring rate; the per-fold event floor, not the scale, sets every cohort's size."""
    _, summaries = default_root
    assert [s["cohort"] for s in summaries] == list(COHORTS)
    for s in summaries:
        spec = SPECS[s["cohort"]]
        assert s["patients"] == n_patients(s["cohort"], DEFAULT_SCALE, MIN_TEST_EVENTS) > round(spec.patients * DEFAULT_SCALE)
        assert synthetic_censoring(s["cohort"]) - 0.02 <= s["censoring"] <= synthetic_censoring(s["cohort"]), s
        assert 0.7 <= s["oracle_c_index"] <= 0.9, s
    assert sum(s["patients"] for s in summaries) == 318


def fold_deaths(root: Path, cohort: str) -> list[int]:
    """Deaths in each test (`val`) fold, read back through the real loader and the split files."""
    co = open_cohort(DataRoot(root), cohort)
    folds = load_folds(DataRoot(root), cohort, co.case_ids, allow_unverified=True)
    return [int(co.patients.loc[list(f.val), "event"].sum()) for f in folds.values()]


def test_every_test_fold_of_the_default_holds_8_deaths(default_root):
    root, summaries = default_root
    for s in summaries:
        events = fold_deaths(root, s["cohort"])
        assert min(events) >= MIN_TEST_EVENTS == 8, (s["cohort"], events)
        assert events == s["test_events"] and max(events) - min(events) <= 1  # stratified by event: spread evenly


def test_a_smaller_scale_keeps_the_floor_and_a_larger_one_adds_patients(tmp_path, default_root):
    """The floor sets the default's sizes, so scale 0.01 writes the default's files; another seed keeps the floor too."""
    root, _ = default_root
    synthesize(tmp_path / "small", ["brca", "ucec"], scale=0.01, log=lambda _: None)
    small, default = digests(tmp_path / "small"), digests(root)
    assert all(small[k] == default[k] for k in small if k != "synth.json")
    for seed, scale in ((5, 0.01), (6, 0.3)):
        out = tmp_path / f"s{seed}"
        (brca,) = synthesize(out, ["brca"], seed=seed, scale=scale, log=lambda _: None)
        assert brca["patients"] == max(71, round(956 * scale))
        assert min(fold_deaths(out, "brca")) >= MIN_TEST_EVENTS


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
        store = FeatureStore(data.features(c))
        assert not store.missing_slides(s for slides in co.patients["slides"] for s in slides)
        case = co.case_ids[0]
        bag = store.bag(case, co.patients.at[case, "slides"])
        assert bag.shape[1] == 1024 and bag.min() >= 0  # post-ReLU like ResNet features
        folds = load_folds(data, c, co.case_ids)  # verified against the manifest's synthetic/ sums
        assert sorted(x for f in folds.values() for x in f.val) == sorted(co.case_ids)


def test_manifest_pins_the_default_synthetic_splits(default_root, tmp_path):
    """The manifest's synthetic/ entries are exactly the files the default run generates; other settings are not pinned."""
    root, _ = default_root
    pinned = {k.removeprefix("synthetic/"): v for k, v in read_manifest().items() if k.startswith("synthetic/")}
    made = {str(p.relative_to(root / "splits")): sha256_file(p) for p in (root / "splits").rglob("*.csv")}
    assert len(made) == 25 and pinned == made
    assert pinned_sums(root) == (pinned, "embedded synthetic default")
    synthesize(tmp_path, ["ucec"], min_test_events=0, log=lambda _: None)  # default seed and scale, another floor
    assert pinned_sums(tmp_path)[0] is None


def test_tiny_roots_without_the_fold_floor_keep_enough_events_to_cut_bins(tmp_path):
    """min_test_events=0 (tiny test roots): UCEC at scale 0.001 has MIN_PATIENTS patients and MIN_EVENTS deaths or more."""
    (s,) = synthesize(tmp_path, ["ucec"], scale=0.001, min_test_events=0, log=lambda _: None)
    assert s["patients"] == MIN_PATIENTS
    assert sum(s["test_events"]) == round(s["patients"] * (1 - s["censoring"])) >= MIN_EVENTS


def test_cli_prints_the_oracle_c_index(tmp_path):
    """The printed oracle C is the C-index of the written truth against the written labels."""
    out = subprocess.run([sys.executable, "-m", "bench.data", "synth", "--out", str(tmp_path), "--cohorts", "ucec",
                          "--scale", "0.05", "--seed", "3"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    found = re.findall(r"oracle C ([0-9.]+)", out.stdout)
    assert len(found) == 1, out.stdout
    assert int(re.search(r"deaths per test fold (\d+)-", out.stdout).group(1)) >= 8
    co = open_cohort(DataRoot(tmp_path), "ucec")
    assert float(found[0]) == pytest.approx(c_index(co.patients["time"], co.patients["event"], co.truth), abs=5e-4)
    assert float(found[0]) > 0.6


def test_the_default_root_is_rewritten_only_when_an_older_generator_wrote_it(tmp_path, monkeypatch):
    """bench.run's data/synthetic follows the generator; a current root, or one given by --data-root, is left alone."""
    from bench.data import synth

    synthesize(tmp_path, ["ucec"], scale=0.001, min_test_events=0, log=lambda _: None)
    calls = []
    monkeypatch.setattr(synth, "synthesize", lambda root, log: calls.append(root))
    synth.ensure_synthetic(tmp_path, rewrite_stale=True, log=lambda _: None)
    assert calls == []  # this generator's version, other settings: the user's choice
    stamp = tmp_path / "synth.json"
    stamp.write_text(stamp.read_text().replace(f'"version": {synth.GENERATOR_VERSION}', '"version": 1'))
    synth.ensure_synthetic(tmp_path, rewrite_stale=False, log=lambda _: None)
    assert calls == [] and (tmp_path / "features").is_dir()
    synth.ensure_synthetic(tmp_path, rewrite_stale=True, log=lambda _: None)
    assert calls == [tmp_path] and not (tmp_path / "features").exists() and not (tmp_path / "splits").exists()
    synth.ensure_synthetic(tmp_path / "new", log=lambda _: None)
    assert calls == [tmp_path, tmp_path / "new"]


def test_patches_per_slide_and_float16_change_only_the_bags(tmp_path):
    """Labels, genomics and splits are drawn before the bags (slide names and covariates after them); bags of 40-50
    patches stored as float16, recorded in synth.json."""
    import json

    import h5py

    synthesize(tmp_path / "a", ["ucec"], log=lambda _: None)
    synthesize(tmp_path / "b", ["ucec"], patches_per_slide=(40, 50), dtype="float16", log=lambda _: None)
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    same = [k for k in a if k.startswith(("splits/", "truth/", "signatures"))]
    assert len(same) == 7 and all(a[k] == b[k] for k in same)
    ca, cb = (open_cohort(DataRoot(tmp_path / x), "ucec") for x in "ab")
    assert ca.patients[["time", "event"]].equals(cb.patients[["time", "event"]]) and ca.omics.equals(cb.omics)
    files = list((tmp_path / "b/features/tcga_ucec/h5_files").glob("*.h5"))
    assert files and sorted(files) == sorted(tmp_path / "b" / k for k in b if k.startswith("features/"))
    for path in files:
        with h5py.File(path, "r") as f:
            assert f["features"].dtype == "float16" and 40 <= f["features"].shape[0] <= 50
    recorded = json.loads((tmp_path / "b/synth.json").read_text())
    assert recorded["patches_per_slide"] == [40, 50] and recorded["dtype"] == "float16"
    assert "patches_per_slide" not in json.loads((tmp_path / "a/synth.json").read_text())


@pytest.mark.parametrize("flag", ["5-3", "0-4", "16", "a-b"])
def test_cli_refuses_a_bad_patch_range(tmp_path, flag, capsys):
    from bench.data.__main__ import main

    assert main(["synth", "--out", str(tmp_path), "--cohorts", "ucec", "--patches-per-slide", flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--patches-per-slide" in err and "Traceback" not in err
    assert not (tmp_path / "features").exists()


# The sha256 over every file of the default root but the bags (signatures, synth.json, tables, truth, splits), as
# written by the generator before scenarios existed. The bags are left out: BLAS may round their float32 sums
# differently on another CPU, while these files hold rounded decimals.
DEFAULT_ROOT_SHA256 = "ea2381b312b9020c1fb11019635ba14f244cbc6696819d96dde5601c1e63dcd5"


def test_the_default_scenario_keeps_the_files_of_the_generator_before_scenarios(default_root, tmp_path):
    """`shared` is the default, byte for byte: no scenario in synth.json, no carrier column in the truth files."""
    root, _ = default_root
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "features")
    combined = hashlib.sha256("".join(f"{p.relative_to(root).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                                      for p in files).encode()).hexdigest()
    assert len(files) == 37 and combined == DEFAULT_ROOT_SHA256
    synthesize(tmp_path, ["ucec"], scenario_name="shared", log=lambda _: None)
    named, default = digests(tmp_path), digests(root)
    assert all(named[k] == default[k] for k in named if k != "synth.json")


def test_draw_labels_gives_what_synthesize_writes(default_root):
    """The labels, truth and folds drawn without files are those of the written root."""
    root, _ = default_root
    for cohort in ("blca", "ucec"):
        labels = draw_labels(cohort)
        co = open_cohort(DataRoot(root), cohort)
        folds = load_folds(DataRoot(root), cohort, co.case_ids)
        assert labels.case_ids == list(co.case_ids)
        assert co.patients["time"].tolist() == labels.time.tolist()
        assert co.patients["event"].tolist() == (1 - labels.censored).tolist()
        assert co.truth.to_numpy() == pytest.approx(labels.truth, abs=5e-7)
        assert [(sorted(f.train), sorted(f.val)) for f in folds.values()] == [(sorted(a), sorted(b)) for a, b in labels.folds]


def cv_r2(x, y) -> float:
    """Out-of-sample R^2 of a ridge fit (5-fold, penalty chosen inside): in-sample R^2 is 1 with more columns than rows."""
    import numpy as np
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 4, 13)), x, y, cv=5)
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_each_scenario_puts_the_truth_where_it_says(tmp_path):
    """The truth regressed on each side: each patient's mean patch features, and the gene matrix (112 BLCA patients)."""
    import json

    import numpy as np

    fit = {}
    for name in SCENARIOS:
        out = tmp_path / name
        synthesize(out, ["blca"], scale=0.3, dim=32, patches_per_slide=(16, 48), scenario_name=name, log=lambda _: None)
        co = open_cohort(DataRoot(out), "blca")
        store = FeatureStore(DataRoot(out).features("blca"))
        wsi = np.stack([store.bag(c, co.patients.at[c, "slides"]).mean(0) for c in co.case_ids])
        truth = co.truth.to_numpy()
        fit[name] = (cv_r2(wsi, truth), cv_r2(co.omics.to_numpy(float), truth))
        recorded = json.loads((out / "synth.json").read_text())
        written = pd.read_csv(DataRoot(out).truth("blca"))
        if name == "shared":
            assert "scenario" not in recorded and list(written.columns) == ["case_id", "true_risk"]
        else:
            assert recorded["scenario"] == name and set(written["carried_by"]) == {SCENARIOS[name].carried_by}
    for name in ("shared", "null", "sparse"):  # both sides carry z (null: the hazard ignores it)
        assert fit[name][1] > 0.8, (name, fit)
    assert fit["shared"][0] > 0.5 and fit["null"][0] > 0.5
    assert fit["histology"][0] > 0.5 and fit["histology"][1] < 0.1, fit
    assert fit["genomic"][1] > 0.8 and fit["genomic"][0] < 0.1, fit
    assert 0.1 < fit["sparse"][0] < fit["shared"][0] - 0.2, fit  # rare informative patches: a weaker histology signal


def test_scenarios_whose_hazard_follows_z_share_labels_truth_and_folds(tmp_path):
    """The independent latent has a stream of its own: histology, genomic and sparse change only what follows it."""
    shared = draw_labels("luad")
    for name in ("histology", "genomic", "sparse"):
        other = draw_labels("luad", scenario_name=name)
        assert (other.time == shared.time).all() and (other.truth == shared.truth).all() and other.folds == shared.folds
    assert not (draw_labels("luad", scenario_name="null").time == shared.time).all()


def test_the_null_truth_is_independent_of_the_time():
    """Over 3,824 BRCA-like patients the truth's C is 0.5 within sampling error (sd about 0.006); shared's is 0.79."""
    for name, low, high in (("null", 0.475, 0.525), ("shared", 0.75, 0.83)):
        labels = draw_labels("brca", scale=4.0, scenario_name=name)
        assert low < c_index(labels.time, 1 - labels.censored, labels.truth) < high, name


@pytest.mark.parametrize("scenario, fraction", [("histology", "0.1"), ("sparse", "0"), ("sparse", "1.5")])
def test_cli_refuses_a_fraction_outside_the_sparse_scenario(tmp_path, scenario, fraction, capsys):
    from bench.data.__main__ import main

    assert main(["synth", "--out", str(tmp_path), "--cohorts", "ucec", "--scenario", scenario,
                 "--prognostic-fraction", fraction]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "prognostic fraction" in err and "Traceback" not in err
    assert not (tmp_path / "features").exists()


def test_cli_writes_a_sparse_scenario_with_its_fraction(tmp_path):
    """Recorded in synth.json; every slide keeps at least one informative patch, so tiny bags stay learnable."""
    import json

    from bench.data.__main__ import main

    assert main(["synth", "--out", str(tmp_path), "--cohorts", "ucec", "--scale", "0.001", "--min-test-events", "0",
                 "--dim", "8", "--scenario", "sparse", "--prognostic-fraction", "0.05"]) == 0
    recorded = json.loads((tmp_path / "synth.json").read_text())
    assert recorded["scenario"] == "sparse" and recorded["prognostic_fraction"] == 0.05
