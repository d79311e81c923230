"""The extended models train and score through bench.run on synthetic data, and --models selects them."""

from __future__ import annotations

import numpy as np
from mlflow.tracking import MlflowClient

from bench.run import main, parse_models
from models import DEFAULT_MODELS, select_models
from tests.test_run import artifact_csv, runs_of, store_uri, tiny_root

NEW = ["abmil_snn", "clam_sb", "coxnet"]


def test_models_selections():
    assert parse_models("default") == sorted(DEFAULT_MODELS)
    assert set(NEW) <= set(parse_models("extended")) == set(select_models("extended"))
    assert parse_models("all") == sorted(parse_models("default") + parse_models("extended"))
    assert parse_models("coxnet,abmil") == ["coxnet", "abmil"]


def test_new_models_tune_train_and_score_through_bench_run(tmp_path_factory, tmp_path):
    """Nested protocol, 1 trial, 1 epoch, fold 0 of the tiny synthetic blca: every run finishes with a C, a
    Brier score and S_1..S_4; coxnet's risk is its linear predictor, not -sum S."""
    uri, experiment = store_uri(tmp_path_factory), "extended-new"
    code = main(["--data-root", str(tiny_root(tmp_path_factory)), "--tracking-uri", uri, "--experiment", experiment,
                 "--cohorts", "blca", "--folds", "0", "--protocol", "nested", "--trials", "1", "--epochs", "1",
                 "--models", ",".join(NEW), "--workers", "1", "--cache-gb", "0.05"])
    assert code == 0
    client = MlflowClient(uri)
    runs = {r.data.tags["model"]: r for r in runs_of(client, experiment)}
    assert sorted(runs) == NEW
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        assert 0.0 <= run.data.metrics["c_index"] <= 1.0 and "ibs" in run.data.metrics, name
    assert {"alpha_ratio", "l1_ratio"} <= set(runs["coxnet"].data.params)
    pred = artifact_csv(client, runs["coxnet"], "predictions.csv", tmp_path)
    surv = pred[[f"S_{k}" for k in range(1, 5)]].to_numpy()
    assert ((surv >= 0) & (surv <= 1)).all() and (np.diff(surv, axis=1) <= 1e-12).all()
    assert not np.allclose(pred["risk"], -surv.sum(axis=1))
