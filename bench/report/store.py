"""Reading the MLflow store: one experiment's finished fold runs, checked, and their predictions.

The only module of bench.report that reads MLflow; everything after it takes DataFrames. The runs of a table
must agree on every recorded setting (`SETTING_TAGS`), package version and, per fold, split file, unless the
caller allows a mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.tracking import COHORT_TAGS, PREDICTIONS_ARTIFACT, RUN_KIND, SETTING_TAGS, VERSION_TAGS, check_store

FOLD_FILTER = f"tags.{RUN_KIND} = 'fold' and attributes.status = 'FINISHED'"
REQUIRED_TAGS = ("model", "cohort", "fold", "protocol", "data", "seed")
PRED_COLUMNS = ("case_id", "split", "time", "event", "risk")
# read from each fold run (calibration is recomputed from predictions and edges); job_seconds: the README's compute
RUN_METRICS = ("oracle_c_index", "job_seconds")
RUN_PARAMS = ("bin_edges",)  # the fold's bin edges (4 decimals): bench.report.calibration reads the curves with them
# What the runs of one table must agree on besides SETTING_TAGS: the package versions everywhere, and the split file
# within each (cohort, fold) (the folds of a cohort have their own files by nature)
CHECKED_TAGS = (*SETTING_TAGS, *VERSION_TAGS)
FOLD_TAGS = ("split_sha256",)


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], FOLD_FILTER, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _pick_experiment(client, name: str | None, uri: str):
    experiments = client.search_experiments()
    with_folds = [e for e in experiments if client.search_runs([e.experiment_id], FOLD_FILTER, max_results=1)]
    listing = ", ".join(sorted(e.name for e in with_folds)) or "none"
    if name is not None:
        match = [e for e in experiments if e.name == name]
        if not match:
            raise BenchError(f"Experiment {name!r} is not in the MLflow store {uri}. Experiments with finished "
                             f"fold runs: {listing}. Pass one of them with --experiment.")
        return match[0]
    if not with_folds:
        raise BenchError(f"The MLflow store {uri} has no finished fold runs (tag {RUN_KIND}=fold, status FINISHED). "
                         "Run `python -m bench.run` first, or pass --tracking-uri naming the store that holds them.")
    if len(with_folds) > 1:
        raise BenchError(f"The MLflow store {uri} has finished fold runs in several experiments: {listing}. "
                         "Choose one with --experiment NAME.")
    return with_folds[0]


def read_store(uri: str, experiment: str | None, allow_mixed: bool = False,
               models: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """Finished fold runs and their predictions: (runs, predictions, the MLflow experiment).

    `models`: only these models' runs (one experiment may hold the default five and the extended ones);
    None: every model with runs. The runs kept must agree on every `CHECKED_TAGS` entry (`n/a` where a run
    predates the tag) and, within a (cohort, fold), on `split_sha256`, unless `allow_mixed`: then the table's
    caption lists the mix.

    `runs` has one row per (model, cohort, seed, fold) — the latest finished run where a job was rerun —
    with its tags, start and end times (ms), `RUN_METRICS` (NaN where not logged) and `RUN_PARAMS` (empty where not
    logged). `predictions` is every run's predictions.csv stacked, with model, cohort, seed and fold added.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_store(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = _pick_experiment(client, experiment, uri)
        found = _all_runs(client, exp.experiment_id)
    except MlflowException as err:
        reason = err.message.splitlines()[0].rstrip(".")
        raise BenchError(f"Cannot read the MLflow store at {uri}: {reason}. "
                         "Check --tracking-uri (and that the tracking server is running).") from err
    if not found:
        raise BenchError(f"Experiment {exp.name!r} in {uri} has no finished fold runs (tag {RUN_KIND}=fold, status "
                         "FINISHED). Run `python -m bench.run` for it first.")
    rows = []
    for run in found:
        tags = run.data.tags
        missing = [t for t in REQUIRED_TAGS if t not in tags]
        if missing:
            raise BenchError(f"Fold run {run.info.run_id} in experiment {exp.name!r} lacks the tags "
                             f"{', '.join(missing)}; it was not written by bench.run. Delete it or tag it.")
        rows.append({"run_id": run.info.run_id, "start_time": run.info.start_time, "end_time": run.info.end_time or 0,
                     **{t: tags[t] for t in REQUIRED_TAGS},
                     **{t: tags.get(t, "n/a") for t in (*CHECKED_TAGS, *FOLD_TAGS)},
                     **{m: run.data.metrics.get(m, np.nan) for m in RUN_METRICS},
                     **{p: run.data.params.get(p, "") for p in RUN_PARAMS}})
    runs = pd.DataFrame(rows)
    for tag in ("protocol", "data"):
        if runs[tag].nunique() > 1:
            found_values = ", ".join(sorted(runs[tag].unique()))
            raise BenchError(f"Experiment {exp.name!r} mixes fold runs with {tag} {found_values}; "
                             "one table needs one protocol and one data source. Rerun into separate experiments "
                             "(bench.run's default names them <data>-<protocol>).")
    runs["fold"] = runs["fold"].astype(int)
    runs["seed"] = runs["seed"].astype(int)
    runs = (runs.sort_values(["model", "cohort", "seed", "fold", "end_time", "run_id"], ascending=[1, 1, 1, 1, 0, 0])
                .drop_duplicates(["model", "cohort", "seed", "fold"]).reset_index(drop=True))
    if models is not None:
        runs = only_models(runs, models)
    if (mixed := mixed_settings(runs)) and not allow_mixed:
        raise BenchError(f"Experiment {exp.name!r}: the runs of one table differ in {'; '.join(mixed)}. "
                         "A table needs one setting of each: rerun the odd jobs with the table's settings (bench.run "
                         "reruns exactly those), or pass --allow-mixed to build it anyway with the mix in its caption.")
    preds = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs.itertuples():
            where = f"fold run {run.run_id} ({run.model}, {run.cohort}, fold {run.fold}, seed {run.seed})"
            try:
                path = client.download_artifacts(run.run_id, PREDICTIONS_ARTIFACT, os.path.join(tmp, run.run_id))
            except (MlflowException, OSError) as err:
                raise BenchError(f"The {where} has no readable {PREDICTIONS_ARTIFACT} artifact ({err}). "
                                 "Rerun that job with `python -m bench.run`.") from err
            table = pd.read_csv(path)
            lacking = [c for c in PRED_COLUMNS if c not in table.columns]
            if lacking:
                raise BenchError(f"{PREDICTIONS_ARTIFACT} of the {where} lacks the columns {', '.join(lacking)}. "
                                 "Rerun that job with `python -m bench.run`.")
            preds.append(table.assign(model=run.model, cohort=run.cohort, seed=run.seed, fold=run.fold))
    return runs, pd.concat(preds, ignore_index=True), exp


def only_models(runs: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """The runs of these models, chosen before the settings are compared: another model's runs at another
    suite version must not stop a table they are not in."""
    keep = runs["model"].isin(models)
    if not keep.any():
        raise BenchError(f"no finished fold runs of {', '.join(models)} in this experiment; it holds "
                         f"{', '.join(sorted(runs['model'].unique()))}. Pick some of those with --models.")
    return runs[keep].reset_index(drop=True)


def mixed_settings(runs: pd.DataFrame, examples: int = 3) -> list[str]:
    """Each setting on which the runs differ, as `tag: value (n runs, e.g. ids), ...`; [] when they agree.

    `COHORT_TAGS` (a cohort's own feature files and table variant) are compared within each cohort only, the split
    file within each (cohort, fold); the settings (`SETTING_TAGS`) and package versions across the table.
    """
    def scopes(tag):
        if tag in FOLD_TAGS:
            return [(f" ({c} fold {k})", g) for (c, k), g in runs.groupby(["cohort", "fold"])]
        return [(f" ({c})", g) for c, g in runs.groupby("cohort")] if tag in COHORT_TAGS else [("", runs)]

    out = []
    for tag in (t for t in (*CHECKED_TAGS, *FOLD_TAGS) if t in runs):
        for where, group in scopes(tag):
            if group[tag].nunique() > 1:
                parts = [f"{value} ({len(ids)} run{'s' if len(ids) > 1 else ''}, e.g. {', '.join(ids[:examples])})"
                         for value, ids in group.groupby(tag)["run_id"].agg(list).items()]
                out.append(f"{tag}{where}: {', '.join(parts)}")
    return out
