"""Nested tuning: the inner split, study resume from the journal, and no look at the outer val labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import bench.protocols
from bench import stats
from bench.data import DataRoot
from bench.fold import PatientSet
from bench.jobs import Job, SweepSettings, load_cohort_data, run_job
from bench.profiles import PROFILES
from bench.tracking import Tracker
from bench.train import TrainingError, TrainSettings
from bench.tune import inner_split, open_study, tune
from models import get_model_class
from tests.test_run import artifact_csv, runs_of, store_uri, tiny_root

SNN_BASE = {**get_model_class("snn").paper_defaults, "epochs": 2, "grad_accum": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def genomic_set(n: int, seed: int) -> PatientSet:
    """Genomics-only patients with unequal (bin, event) strata, enough for SNN trials in milliseconds."""
    rng = np.random.default_rng(seed)
    time = rng.uniform(1.0, 100.0, n)
    return PatientSet(
        case_ids=[f"G{i:03d}" for i in range(n)], time=time, event=(rng.uniform(size=n) < 0.6).astype(int),
        bins=np.digitize(time, [20.0, 45.0, 80.0]),
        omics=[rng.standard_normal((n, d)).astype(np.float32) for d in (3, 4, 5, 3, 4, 3)], bags=None,
    )


def test_inner_split_is_stratified_disjoint_and_inside_the_outer_training_side():
    outer = genomic_set(61, seed=0)
    train, val = inner_split(outer, fraction=0.25, seed=1)
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(len(outer)))  # every index is an outer-training patient, once
    strata = 2 * outer.bins + outer.event
    for s in np.unique(strata):  # each (bin, event) stratum is dealt to the 4 folds in turn
        size, in_val = np.sum(strata == s), np.sum(strata[val] == s)
        assert abs(in_val - size / 4) < 1, (s, size, in_val)
    assert inner_split(outer, 0.25, seed=1) == (train, val)
    assert inner_split(outer, 0.25, seed=2) != (train, val)


@pytest.mark.parametrize("kind", ["journal file", "database URL"])
def test_study_resumes_failing_dead_trials_and_counting_pruned_ones(tmp_path, kind):
    """A RUNNING trial left by a dead attempt becomes FAIL; a rerun runs only the rest of the budget.

    Both storages `--optuna-storage` offers: the default journal file, and a database URL (SQLite here,
    PostgreSQL on a cluster; the same SQLAlchemy storage).
    """
    inner = (genomic_set(24, seed=1), genomic_set(10, seed=2))
    settings = TrainSettings.from_params(SNN_BASE, seed=1)
    journal = tmp_path / "study.log" if kind == "journal file" else f"sqlite:///{tmp_path / 'optuna.db'}"

    params, table = tune("snn", lambda: inner, SNN_BASE, settings, 2, open_study(journal, "s", 1))
    assert len(table) == 2

    dead = open_study(journal, "s", 1).ask()  # a trial that was running when its process died
    study = open_study(journal, "s", 1)
    assert study.trials[dead.number].state == optuna.trial.TrialState.FAIL
    study.add_trial(optuna.trial.create_trial(  # a pruned trial counts against the budget like a complete one
        state=optuna.trial.TrialState.PRUNED, params={"lr": 1e-4},
        distributions={"lr": optuna.distributions.FloatDistribution(5e-5, 1e-3, log=True)}))
    counted = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    assert counted == 3

    params, table = tune("snn", lambda: inner, SNN_BASE, settings, 4, study)
    assert len(table) == 5 and table["number"].max() == 4  # 2 + FAIL + PRUNED + exactly one new trial
    assert (table["state"] == "FAIL").sum() == 1

    reopened = open_study(journal, "s", 1)
    _, again = tune("snn", lambda: inner, SNN_BASE, settings, 4, reopened)
    assert len(again) == 5  # budget spent: nothing runs
    complete = table[table["state"] == "COMPLETE"]
    best = complete.loc[complete["value"].idxmax()]
    assert params["lr"] == pytest.approx(best["params_lr"]) and params["dropout"] == pytest.approx(best["params_dropout"])


def test_nested_job_never_reads_outer_val_labels(tmp_path_factory, tmp_path, monkeypatch):
    """Run one nested job twice, the second time with the outer-val patients' labels scrambled.

    Tuning, the chosen params and the refit model must be identical: the inner sets hold outer-training
    patients only, and every prediction (features only) is the same; only the scored labels differ.
    """
    root = tiny_root(tmp_path_factory)
    tracker_uri = store_uri(tmp_path_factory)
    job = Job("snn", "blca", 0, 1)
    inner_sets: list[tuple[PatientSet, PatientSet]] = []
    real_tune = bench.protocols.tune

    def recording_tune(model, make_inner, *args, **kwargs):
        def make_and_record():
            inner_sets.append(make_inner())
            return inner_sets[-1]
        return real_tune(model, make_and_record, *args, **kwargs)

    monkeypatch.setattr(bench.protocols, "tune", recording_tune)
    runs = {}
    for name in ("clean", "scrambled"):
        settings = SweepSettings(data="synthetic", root=DataRoot(root), protocol="nested",
                                 profile=replace(PROFILES["quick"], epochs=2), trials=2, optuna_dir=tmp_path / name)
        cd = load_cohort_data(settings, "blca")
        if name == "scrambled":
            val = list(cd.folds[0].val)
            rng = np.random.default_rng(7)
            cd.cohort.patients.loc[val, "time"] = rng.uniform(0.5, 300.0, len(val)).round(2)
            cd.cohort.patients.loc[val, "event"] = 1 - cd.cohort.patients.loc[val, "event"]
        result = run_job(job, settings, Tracker(tracker_uri, f"poison-{name}"), cd)
        assert result.status == "finished", result.reason
        (runs[name],) = runs_of(MlflowClient(tracker_uri), f"poison-{name}")

    split = cd.folds[0]
    assert len(inner_sets) == 2
    for inner_train, inner_val in inner_sets:
        assert set(inner_train.case_ids) | set(inner_val.case_ids) == set(split.train)
        assert not set(inner_train.case_ids) & set(inner_val.case_ids)
    (clean_tr, clean_va), (poison_tr, poison_va) = inner_sets
    for a, b in ((clean_tr, poison_tr), (clean_va, poison_va)):
        assert a.case_ids == b.case_ids
        np.testing.assert_array_equal(a.time, b.time)
        np.testing.assert_array_equal(a.bins, b.bins)

    client = MlflowClient(tracker_uri)
    tables = {k: {a: artifact_csv(client, r, a, tmp_path / k) for a in ("trials.csv", "predictions.csv")}
              for k, r in runs.items()}
    pd.testing.assert_frame_equal(tables["clean"]["trials.csv"], tables["scrambled"]["trials.csv"])
    assert runs["clean"].data.params == runs["scrambled"].data.params
    clean, poisoned = tables["clean"]["predictions.csv"], tables["scrambled"]["predictions.csv"]
    np.testing.assert_array_equal(clean["case_id"], poisoned["case_id"])
    np.testing.assert_array_equal(clean["risk"], poisoned["risk"])
    test = clean["split"] == "test"
    assert not np.array_equal(clean.loc[test, "time"], poisoned.loc[test, "time"]), "the scramble did not reach the job"
    np.testing.assert_array_equal(clean.loc[~test, ["time", "event"]], poisoned.loc[~test, ["time", "event"]])


def test_undefined_inner_c_fails_the_trial_instead_of_scoring_half(tmp_path):
    """An inner val split without a comparable pair gives no C: each trial is FAIL with the reason, never 0.5."""
    inner_train, inner_val = genomic_set(24, seed=1), genomic_set(10, seed=2)
    inner_val.event = np.zeros_like(inner_val.event)  # nobody died: no pair is comparable
    settings = TrainSettings.from_params(SNN_BASE, seed=1)
    study = open_study(tmp_path / "study.log", "s", 1)
    with pytest.warns(UserWarning, match="C-index undefined"):
        with pytest.raises(TrainingError, match="every tuning trial failed.*inner-val C-index undefined"):
            tune("snn", lambda: (inner_train, inner_val), SNN_BASE, settings, 2, study)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all(t.value is None and "undefined" in t.user_attrs["failure"] for t in study.trials)


def test_job_logs_ipcw_tau_calibration_and_separate_loss_curves(tmp_path_factory, tmp_path):
    """The fold run carries tau (the training follow-up's 80th percentile), IBS, td-AUC, the Kaplan-Meier
    reference IBS, the skill score and D-calibration of its own predictions at its bin edges, and per-epoch
    loss_nll beside train_loss (no loss_aux for SNN)."""
    root, uri = tiny_root(tmp_path_factory), store_uri(tmp_path_factory)
    settings = SweepSettings(data="synthetic", root=DataRoot(root), protocol="paper",
                             profile=replace(PROFILES["quick"], epochs=2), trials=0, optuna_dir=tmp_path)
    cd = load_cohort_data(settings, "blca")
    result = run_job(Job("snn", "blca", 1, 1), settings, Tracker(uri, "job-metrics"), cd)
    assert result.status == "finished", result.reason
    client = MlflowClient(uri)
    (run,) = runs_of(client, "job-metrics")
    pred = artifact_csv(client, run, "predictions.csv", tmp_path)
    train, test = pred[pred["split"] == "train"], pred[pred["split"] == "test"]
    metrics = run.data.metrics
    assert metrics["ipcw_tau"] == pytest.approx(np.quantile(train["time"], 0.8))
    assert metrics["ipcw_tau"] < train["time"].max()
    edges = np.array([float(e) for e in run.data.params["bin_edges"].split(",")])  # logged to 4 decimals
    surv = test[["S_1", "S_2", "S_3", "S_4"]].to_numpy()
    calibration = (train["time"], train["event"], test["time"], test["event"], surv, edges)
    recomputed = stats.fold_calibration(*calibration)  # what the report computes for runs of any suite version
    assert {"ibs", "ibs_km", "brier_skill", "td_auc", "dcal_chi2", "dcal_p"} <= metrics.keys()
    for key, value in recomputed.items():  # the same grid: only the csv's 8 digits and the param's 4 decimals differ
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    curves = {key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
              for key in ("train_loss", "loss_nll", "loss_aux")}
    assert len(curves["train_loss"]) == 2 and curves["loss_nll"] == pytest.approx(curves["train_loss"])
    assert curves["loss_aux"] == []
