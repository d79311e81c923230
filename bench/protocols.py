"""The two protocols: how a job's fold becomes the params, metrics, tables and curves its run logs.

- nested: bins cut on the outer training fold; an Optuna study on an inner split of the outer training
  patients chooses the hyperparameters; the refit is scored once on the outer test fold, at its last epoch.
- paper: as published: bins cut on the whole cohort (the scored fold included), the reference
  hyperparameters, the last epoch scored; the test C per epoch is only logged, as the optimistic
  `c_index_best_epoch_optimistic`.

`bench.jobs` owns what a job is, its key and its MLflow run; this module only computes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench import checkpoint
from bench.fold import OmicScaler, make_fold
from bench.splits import Split
from bench.stats import fold_calibration, ipcw_c_index, ipcw_tau
from bench.survival import c_index, fit_bin_edges
from bench.train import TrainSettings, fit, predict
from bench.tune import inner_split, open_study, tune
from models import CLINICAL, get_model_class, reads_slides
from models.clinical import unseen_values

if TYPE_CHECKING:  # bench.jobs imports this module; the types are only for the signature
    from bench.jobs import CohortData, Job, SweepSettings

# What each protocol does that a reader of a run or a table must know (tags `bins_cut_on`, `scored_epoch`).
PROTOCOL_FACTS = {
    "nested": {"bins_cut_on": "outer training fold", "scored_epoch": "last"},
    "paper": {"bins_cut_on": "whole cohort, including the scored fold", "scored_epoch": "last"},
}


def fit_and_score(job: Job, s: SweepSettings, cd: CohortData, split: Split, key: str, progress):
    """One job under its protocol: (params, metrics, tables, curves, files) to log; `key` names its Optuna study.

    `files`: the saved fold model (bench.checkpoint) by artifact path, when `s.save_models`.
    """
    cls = get_model_class(job.model)
    store = cd.store if reads_slides(job.model) else None
    cohort = cd.cohort
    base = {**cls.paper_params(job.cohort), "epochs": s.profile.epochs, "grad_accum": s.profile.grad_accum}
    speed = dict(seed=job.seed, micro_batch=s.micro_batch, device=s.device, precision=s.precision,
                 max_tokens=s.max_tokens)
    train_ids, val_ids = list(split.train), list(split.val)
    p_train = cohort.patients.loc[train_ids]
    tables: dict[str, pd.DataFrame] = {}
    metrics: dict[str, float] = {}

    if s.protocol == "nested":
        # Everything below until the refit sees the outer training patients only.
        outer_edges = fit_bin_edges(p_train["time"].to_numpy(), p_train["event"].to_numpy())

        def make_inner():
            strat, _ = make_fold(cohort, train_ids, [], outer_edges, None)
            inner_tr, inner_va = inner_split(strat, s.profile.inner_val_fraction, job.seed)
            ids_tr, ids_va = [train_ids[i] for i in inner_tr], [train_ids[i] for i in inner_va]
            p = cohort.patients.loc[ids_tr]
            edges = fit_bin_edges(p["time"].to_numpy(), p["event"].to_numpy())
            return make_fold(cohort, ids_tr, ids_va, edges, store)

        study_name = f"{job.model}_{job.cohort}_fold{job.fold}_seed{job.seed}_{key}"
        storage = s.optuna_storage or s.optuna_dir / f"{study_name}.log"
        study = open_study(storage, study_name, job.seed)
        params, trials = tune(job.model, make_inner, base, TrainSettings.from_params(base, **speed), s.trials, study,
                              progress)
        tables["trials.csv"] = trials
        edges = outer_edges
        on_epoch = None
    else:
        edges = fit_bin_edges(cohort.patients["time"].to_numpy(), cohort.patients["event"].to_numpy())
        params = base
        on_epoch = None

    train, test = make_fold(cohort, train_ids, val_ids, edges, store)
    settings = TrainSettings.from_params(params, **speed)
    per_epoch: list[float] = []
    if s.protocol == "paper":
        def on_epoch(epoch, model):  # the test fold is only watched here, never used to choose anything
            pred = predict(model, test, settings)
            per_epoch.append(c_index(pred["time"], pred["event"], pred["risk"]))
            progress(f"epoch {epoch + 1}/{settings.epochs}")
    result = fit(job.model, train, params, settings, on_epoch)
    pred_test = predict(result.model, test, settings, split="test")
    pred_train = predict(result.model, train, settings, split="train")
    metrics["c_index"] = c_index(pred_test["time"], pred_test["event"], pred_test["risk"])
    metrics["ipcw_tau"] = ipcw_tau(pred_train["time"])
    metrics["c_index_ipcw"] = ipcw_c_index(pred_train["time"], pred_train["event"], pred_test["time"],
                                           pred_test["event"], pred_test["risk"], tau=metrics["ipcw_tau"])
    surv = pred_test[[f"S_{k}" for k in range(1, len(edges))]].to_numpy()
    # ibs, td_auc, the Kaplan-Meier reference ibs_km, brier_skill and D-calibration (dcal_chi2, dcal_p); the report
    # recomputes them from predictions.csv and the bin_edges param, so runs of older suite versions get them too
    metrics.update(fold_calibration(pred_train["time"], pred_train["event"], pred_test["time"], pred_test["event"],
                                    surv, edges))
    if CLINICAL in cls.infer_modalities:  # test patients scored at the reference level or the training median
        encoding = result.model_kwargs["clinical_encoding"]
        metrics.update({f"test_{k}": v for k, v in unseen_values(test.clinical, encoding).items()})
    if cohort.truth is not None:
        metrics["oracle_c_index"] = c_index(pred_test["time"], pred_test["event"], pred_test["true_risk"])
    if per_epoch:
        metrics["c_index_best_epoch_optimistic"] = float(np.nanmax(per_epoch))
    metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
    tables["predictions"] = pd.concat([pred_test, pred_train], ignore_index=True)
    logged = {**params, "bin_edges": ",".join(f"{e:.4f}" for e in edges), "n_train": len(train), "n_test": len(test),
              "micro_batch": s.micro_batch, "max_tokens": s.max_tokens}
    curves = {"train_loss": result.train_loss, "loss_nll": result.loss_nll, "loss_aux": result.loss_aux}
    files = {}
    if s.save_models:
        scaler = OmicScaler(cohort.group_arrays(train_ids))  # the refit's scaler: make_fold fits it on these patients
        scoring = {"micro_batch": s.micro_batch, "max_tokens": s.max_tokens, "precision": s.precision,
                   "feature_precision": s.cache_dtype}
        saved = checkpoint.pack(job.model, result.model, result.model_kwargs, edges, scaler, cohort.groups, logged,
                                scoring, store.dim if store is not None else None, s.suite_version)
        files = {f"{checkpoint.ARTIFACT_DIR}/{name}": data for name, data in saved.items()}
    return logged, metrics, tables, {k: v for k, v in curves.items() if v}, files
