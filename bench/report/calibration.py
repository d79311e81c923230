"""Calibration of every fold run, computed here from its predictions.csv and its `bin_edges` param.

Not read from the runs' metrics: a run finished by an older suite version logged no Kaplan-Meier reference and
no D-calibration, and the report must give every run of a table the same numbers. The edges come back with 4
decimals; `bench.stats` picks the scorable grid by index, so the grid is the one the job scored on (and real
follow-up times, in hundredths of a month, make the 4-decimal quantile cut points exact).

Per fold run: the model's IBS, the IBS of the training fold's Kaplan-Meier curve on the same grid, the skill
1 - IBS / IBS_KM, the td-AUC and D-calibration, whose p-values are Benjamini-Hochberg corrected over the whole
table. Per cohort: predicted against observed survival of risk groups at one horizon, the median over folds of
the training fold's median follow-up.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import stats

CALIBRATION_GROUPS = 4  # risk groups per (cohort, model) at the horizon: about 15 patients each on the default
FOLD_KEYS = ["cohort", "model", "seed", "fold"]
FOLD_COLUMNS = [*FOLD_KEYS, "run_id", "n_test", "n_events_test", "ibs", "ibs_km", "brier_skill", "td_auc",
                "dcal_chi2", "dcal_p", "dcal_bh_p", "dcal_reject"]
GROUP_COLUMNS = ["cohort", "model", "horizon", "group", "n", "deaths", "at_risk", "predicted", "observed",
                 "observed_low", "observed_high"]


def parse_edges(text) -> np.ndarray | None:
    """The `bin_edges` param (comma-separated) as floats; None where a run did not log it."""
    if not isinstance(text, str) or not text.strip():
        return None
    return np.array([float(e) for e in text.split(",")])


def _curves(part: pd.DataFrame, edges: np.ndarray) -> np.ndarray:
    return part[[f"S_{k}" for k in range(1, edges.size)]].to_numpy(dtype=float)


def _edges_by_run(runs: pd.DataFrame) -> dict:
    column = runs["bin_edges"] if "bin_edges" in runs else pd.Series(None, index=runs.index)
    return {tuple(key): parse_edges(text) for key, text in zip(runs[FOLD_KEYS].itertuples(index=False), column)}


def fold_calibration(runs: pd.DataFrame, preds: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """One row per fold run (`FOLD_COLUMNS`); NaN where the run logged no edges or a number is undefined.

    `dcal_bh_p` is Benjamini-Hochberg over every fold run of the table (m counts the undefined ones too) and
    `dcal_reject` says dcal_bh_p < alpha.
    """
    edges_of = _edges_by_run(runs)
    run_ids = dict(zip(runs[FOLD_KEYS].itertuples(index=False, name=None), runs["run_id"]))
    rows = []
    for key, part in preds.groupby(FOLD_KEYS, sort=True):
        train, test = part[part["split"] == "train"], part[part["split"] == "test"]
        edges = edges_of.get(key)
        row = dict(zip(FOLD_KEYS, key), run_id=run_ids.get(key, ""), n_test=len(test),
                   n_events_test=int(test["event"].astype(bool).sum()))
        if edges is not None and f"S_{edges.size - 1}" in part:
            row.update(stats.fold_calibration(train["time"], train["event"], test["time"], test["event"],
                                              _curves(test, edges), edges))
        rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=FOLD_COLUMNS)
    out["dcal_bh_p"] = stats.benjamini_hochberg(out["dcal_p"].to_numpy(dtype=float))
    out["dcal_reject"] = out["dcal_bh_p"] < alpha
    return out


def km_reference(calibration: pd.DataFrame) -> pd.DataFrame:
    """Per cohort: mean and population std over folds (x seeds) of the Kaplan-Meier reference IBS.

    The reference depends on the fold's training patients and edges, not on the model: within a fold the
    models' values agree (they differ only where --on-missing skip kept other patients), so they are averaged.
    """
    per_fold = calibration.groupby(["cohort", "seed", "fold"])["ibs_km"].mean().reset_index()
    rows = [{"cohort": c, **dict(zip(("ibs_km", "ibs_km_std"), stats.mean_std(g["ibs_km"])))}
            for c, g in per_fold.groupby("cohort", sort=True)]
    return pd.DataFrame(rows, columns=["cohort", "ibs_km", "ibs_km_std"])


def cohort_horizon(pred: pd.DataFrame) -> float:
    """The median over folds of each training fold's median follow-up (first seed; any model's rows name the
    same training patients). Each fold's median sees its training patients only."""
    first = pred[(pred["seed"] == pred["seed"].min()) & (pred["split"] == "train")]
    per_fold = first.drop_duplicates(["fold", "case_id"]).groupby("fold")["time"].apply(stats.follow_up_horizon)
    return float(np.median(per_fold))


def horizon_groups(runs: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """Per (cohort, model): the first seed's test patients, pooled over folds, in `CALIBRATION_GROUPS` groups of
    predicted S(t*) from their own fold model (`stats.survival_at` at t*), each against its Kaplan-Meier at t*.

    S(t*) is an absolute probability, so pooling it over five fold models mixes no scales (unlike a raw risk).
    A model whose runs logged no edges is left out.
    """
    edges_of = _edges_by_run(runs)
    parts = []
    for cohort, cpred in preds.groupby("cohort", sort=True):
        horizon = cohort_horizon(cpred)
        for model, mpred in cpred.groupby("model", sort=True):
            first = mpred[(mpred["seed"] == mpred["seed"].min()) & (mpred["split"] == "test")]
            if first.empty:
                continue
            predicted, time, event = [], [], []
            for (seed, fold), test in first.groupby(["seed", "fold"], sort=True):
                edges = edges_of.get((cohort, model, seed, fold))
                if edges is None:
                    break
                predicted.append(stats.survival_at(np.full(len(test), horizon), _curves(test, edges), edges))
                time.append(test["time"].to_numpy(dtype=float))
                event.append(test["event"].to_numpy(dtype=bool))
            else:
                groups = stats.horizon_groups(np.concatenate(predicted), np.concatenate(time), np.concatenate(event),
                                              horizon, CALIBRATION_GROUPS)
                parts.append(groups.assign(cohort=cohort, model=model, horizon=horizon))
    return pd.concat(parts, ignore_index=True)[GROUP_COLUMNS] if parts else pd.DataFrame(columns=GROUP_COLUMNS)
