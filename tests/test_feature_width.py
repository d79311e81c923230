"""Any encoder's width: synthetic and semisynthetic data at --dim D, and a sweep of every model at CONCH (512),
UNI2-h/GigaPath (1536) and Virchow2 (2560) widths through the whole path (loader, models, MLflow tags)."""

from __future__ import annotations

import json

import h5py
import pytest
from mlflow.tracking import MlflowClient

from bench.data import DataRoot, FeatureStore, open_cohort
from bench.data.semisynth import ensure_features
from bench.data.synth import synthesize
from bench.run import main
from models import list_models
from tests.test_run import runs_of, store_uri


def widths(folder) -> set[int]:
    out = set()
    for path in folder.glob("h5_files/*.h5"):
        with h5py.File(path, "r") as f:
            out.add(f["features"].shape[1])
    return out


def test_synth_dim_changes_only_the_features(tmp_path):
    """Labels, tables and splits are drawn before the features; synth.json names a width only when it is not 1024."""
    log = lambda s: None  # noqa: E731
    synthesize(tmp_path / "d1024", cohorts=["ucec"], scale=0.01, min_test_events=0, log=log)
    synthesize(tmp_path / "d512", cohorts=["ucec"], scale=0.01, min_test_events=0, log=log, dim=512)
    a, b = DataRoot(tmp_path / "d1024"), DataRoot(tmp_path / "d512")
    assert widths(a.features("ucec")) == {1024} and widths(b.features("ucec")) == {512}
    assert a.split("ucec", 0).read_bytes() == b.split("ucec", 0).read_bytes()
    assert open_cohort(a, "ucec").patients["time"].equals(open_cohort(b, "ucec").patients["time"])
    assert "dim" not in json.loads((a.root / "synth.json").read_text())
    assert json.loads((b.root / "synth.json").read_text())["dim"] == 512


def test_semisynthetic_features_take_dim_and_rewrite_when_it_changes(tmp_path):
    synthesize(tmp_path, cohorts=["ucec"], scale=0.01, min_test_events=0, log=lambda s: None)
    root = DataRoot(tmp_path)
    cohort = open_cohort(root, "ucec")
    folder = ensure_features(root, cohort, log=lambda s: None, dim=512)
    assert widths(folder) == {512}
    assert widths(ensure_features(root, cohort, log=lambda s: None, dim=1536)) == {1536}
    case = cohort.case_ids[0]
    assert FeatureStore(folder).bag(case, cohort.patients.at[case, "slides"]).shape[1] == 1536


@pytest.mark.parametrize("dim", [512, 1536, 2560])
def test_sweep_of_every_model_at_an_encoder_width(tmp_path_factory, dim):
    """Paper protocol (one fit, no tuning), 1 fold, 1 epoch, 22 patients: every model builds at this width, finishes
    and records it."""
    root = tmp_path_factory.mktemp(f"width{dim}")
    synthesize(root, cohorts=["blca"], scale=0.06, min_test_events=0, log=lambda s: None, dim=dim)
    uri, experiment = store_uri(tmp_path_factory), f"width-{dim}"
    models = list_models()
    assert {"ghanet", "abmil", "transmil", "snn", "mcat"} <= set(models)
    code = main(["--data-root", str(root), "--tracking-uri", uri, "--experiment", experiment, "--cohorts", "blca",
                 "--folds", "0", "--protocol", "paper", "--epochs", "1", "--seed", "1", "--models", ",".join(models),
                 "--workers", "1", "--cache-gb", "0.05"])
    assert code == 0
    runs = runs_of(MlflowClient(uri), experiment)
    assert sorted(r.data.tags["model"] for r in runs) == sorted(models)
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags["model"]
        assert run.data.tags["feature_dim"] == run.data.tags["features_width"] == str(dim)
        assert run.data.tags["feature_precision"] == "float32"


def test_run_refuses_dim_outside_the_semisynthetic_mode(tmp_path_factory, capsys):
    from tests.test_run import tiny_root

    assert main(["--data-root", str(tiny_root(tmp_path_factory)), "--dim", "512", "--models", "snn"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--dim 512" in err and "python -m bench.data synth --out DIR --dim D" in err
