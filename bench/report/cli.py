"""Tables and figures from the finished fold runs in the MLflow store (the store is the source of truth).

    python -m bench.report [--tracking-uri URI] [--experiment NAME] [--out results/]

Writes into --out: `cindex_table.{csv,md,tex}` (models x cohorts, mean ± population std of the per-fold
Harrell C), `calibration_table.{csv,md}` (models x cohorts, integrated Brier score and td-AUC),
`cindex_summary.csv` (per model and cohort: IPCW C, `ibs` and `td_auc` means, pooled out-of-fold C with
its bootstrap CI, KM log-rank p), `pairwise_tests.csv`, `km/<cohort>_<model>.png`, `km_grid.png`,
`fold_cindex.png` and `ranks.png`, then logs them as artifacts of a `run_kind=report` run in the same experiment.

In `pairwise_tests.csv`, each model's C is first averaged over seeds within a fold; `n_folds` differences
(`n_seeds` seeds each) give the corrected t-test `df` = n_folds - 1, and `mean_diff` is their mean (a - b).
`t_undefined` says why a t-test has no p. `pooled_diff` and the bootstrap CI and p are for the difference
in pooled out-of-fold C; `wilcoxon_p` is descriptive. `holm_p` corrects the corrected-t p-values over every
row of that file (undefined ones count in m and stay empty), and the table's † marker reads it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from bench.report.analysis import analyse, cindex_table, experiment_facts
from bench.report.figures import write_figures
from bench.report.store import read_store
from bench.report.tables import write_calibration_table, write_csvs, write_table
from bench.run import parse_models
from bench.tracking import DEFAULT_TRACKING_URI, RUN_KIND


def log_report_run(uri: str, experiment_id: str, out: Path, files: list[Path], runs: pd.DataFrame) -> str:
    """Create the run_kind=report run in the experiment and attach every written file."""
    from mlflow.tracking import MlflowClient

    facts = experiment_facts(runs)
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id, run_name="report",
                            tags={RUN_KIND: "report", "protocol": facts["protocol"], "data": facts["data"]})
    for f in files:
        sub = f.parent.relative_to(out).as_posix()
        client.log_artifact(run.info.run_id, str(f), artifact_path=None if sub == "." else sub)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def build(runs: pd.DataFrame, preds: pd.DataFrame, out: Path) -> list[Path]:
    """Every table and figure from DataFrames; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    res = analyse(runs, preds)
    return (write_table(cindex_table(res), out) + write_calibration_table(res, out) + write_csvs(res, out)
            + write_figures(res, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default: %(default)s)")
    parser.add_argument("--experiment", default=None,
                        help="experiment name (default: the single experiment that has finished fold runs)")
    parser.add_argument("--out", default="results", type=Path, help="output folder (default: %(default)s/)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="build a table from runs that differ in a recorded setting (listed in its caption)")
    parser.add_argument("--models", default=None,
                        help="comma-separated model names or default|extended|all (default: every model with runs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an unreachable server fails in seconds
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    models = None if args.models is None else parse_models(args.models)
    runs, preds, experiment_id = read_store(args.tracking_uri, args.experiment, args.allow_mixed, models)
    files = build(runs, preds, args.out)
    run_id = log_report_run(args.tracking_uri, experiment_id, args.out, files, runs)
    print(f"wrote {len(files)} files to {args.out}/ and logged them to report run {run_id}")
    return 0
