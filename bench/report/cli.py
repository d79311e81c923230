"""Tables and figures from the finished fold runs in the MLflow store (the store is the source of truth).

    python -m bench.report [--tracking-uri URI] [--experiment NAME] [--out results/]

Writes into --out: `cindex_table.{csv,md,tex}` (models x cohorts, mean ± population std of the per-fold
Harrell C), `calibration_table.{csv,md}` (models x cohorts: integrated Brier score, Brier skill score against
the training fold's Kaplan-Meier, td-AUC, D-calibration rejections; and the Kaplan-Meier reference row),
`cindex_summary.csv` (per model and cohort: IPCW C, the calibration means, D-calibration folds rejected of
tested, pooled out-of-fold C with its bootstrap CI, KM log-rank p), `calibration_folds.csv` (per fold run: IBS,
IBS_KM, skill, td-AUC, D-calibration chi-square, p and Benjamini-Hochberg p over the table),
`calibration_groups.csv` and `calibration/<cohort>.png` (predicted against observed survival at the horizon,
with the horizon in months), `pairwise_tests.csv`, `km/<cohort>_<model>.png`, `km_grid.png`, `fold_cindex.png`,
`ranks.png` and `README.md` (`bench.report.readme`: what each file is, how to read the table, how the runs and
the report were made, what it shows; a hand-written NOTES.md there is linked and left alone), then logs them as
artifacts of a `run_kind=report` run in the same experiment. The calibration is computed from each fold run's
predictions.csv and `bin_edges` param (`bench.report.calibration`), so runs of older suite versions get it too.

In `pairwise_tests.csv`, each model's C is first averaged over seeds within a fold; `n_folds` differences
(`n_seeds` seeds each) give the corrected t-test `df` = n_folds - 1, and `mean_diff` is their mean (a - b).
`t_undefined` says why a t-test has no p. `pooled_diff` and the bootstrap CI and p are for the difference
in pooled out-of-fold C: the bootstrap resamples test patients only, so its p is conditional on the fitted
fold models (it says nothing of another training set or seed), and it is uncorrected for the number of
comparisons; `wilcoxon_p` is descriptive. `comparison` is `ours` (two of our models) or
`published` (one of ours against a model of MCAT's release, model_b, on the same folds: no bootstrap, as no
patient-level predictions were released). `holm_p` corrects the corrected-t p-values within each kind of
comparison (undefined ones count in m and stay empty); the table's † marker reads the `ours` family only.

On tcga runs, MCAT's released per-fold C-indices are read from the runs' data root (tag `data_root`,
`published/mcat/`, written by `python -m bench.data fetch`) or from `--published DIR`, and become rows of
the table and the `published` comparisons.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import pandas as pd

from bench.data.published import COLUMNS, SUBDIR, folder_of, read_published
from bench.errors import BenchError
from bench.report.analysis import analyse, cindex_table, cohort_order, experiment_facts
from bench.report.figures import write_figures
from bench.report.store import read_store
from bench.report.readme import check_writable, write_readme
from bench.report.tables import write_calibration_table, write_csvs, write_table
from bench.run import parse_models
from bench.tracking import RUN_KIND, TRACKING_URI_HELP, browse_text, default_tracking_uri


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


def find_published(runs: pd.DataFrame, where: Path | None) -> pd.DataFrame | None:
    """MCAT's released per-fold C for the runs' cohorts: from `where` (--published), else the runs' data root.

    None when the runs are not on tcga data (the release is on the real cohorts); an empty frame when none
    was found, so the caption can say how to get them.
    """
    facts = experiment_facts(runs)
    cohorts = cohort_order(runs["cohort"])
    if facts["data"] != "tcga":
        if where is not None:
            raise BenchError(f"--published {where}: these runs are on {facts['data']} data, and MCAT's released "
                             "C-indices are on the real TCGA cohorts, so they are compared with tcga runs only. "
                             "Leave out --published.")
        return None
    if where is not None:
        found = read_published(folder_of(where), cohorts)
        if found.empty:
            raise BenchError(f"--published {where}: no MCAT per-fold file for {', '.join(cohorts)} there. Give a "
                             f"data root filled by `python -m bench.data fetch --out DIR` (it holds {SUBDIR}/) or "
                             "that folder itself, holding <experiment>/summary_latest_tcga_<cohort>.csv.")
        return found
    for root in sorted(runs["data_root"].unique()) if "data_root" in runs else ():
        found = read_published(Path(root) / SUBDIR, cohorts)
        if len(found):
            return found
    return pd.DataFrame(columns=COLUMNS)


def build(runs: pd.DataFrame, preds: pd.DataFrame, out: Path, experiment: str, command: str,
          published: pd.DataFrame | None = None) -> list[Path]:
    """Every table and figure from DataFrames (and MCAT's per-fold C, see `find_published`), then the README that
    names them; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    res = analyse(runs, preds, published=published)
    table = cindex_table(res)
    files = write_table(table, out) + write_calibration_table(res, out) + write_csvs(res, out) + write_figures(res, out)
    return files + [write_readme(out, files, res, table, experiment, command)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=default_tracking_uri(), help=TRACKING_URI_HELP)
    parser.add_argument("--experiment", default=None,
                        help="experiment name (default: the single experiment that has finished fold runs)")
    parser.add_argument("--out", default="results", type=Path, help="output folder (default: %(default)s/)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="build a table from runs that differ in a recorded setting (listed in its caption)")
    parser.add_argument("--models", default=None,
                        help="comma-separated model names or default|extended|all (default: every model with runs)")
    parser.add_argument("--published", default=None, type=Path, metavar="DIR",
                        help=f"tcga runs: MCAT's released per-fold C-indices from DIR, a data root holding {SUBDIR}/ "
                             "(`python -m bench.data fetch` writes it) or that folder itself (default: the runs' "
                             "data root)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    check_writable(args.out)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an unreachable server fails in seconds
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    models = None if args.models is None else parse_models(args.models)
    runs, preds, experiment = read_store(args.tracking_uri, args.experiment, args.allow_mixed, models)
    files = build(runs, preds, args.out, experiment.name, shlex.join(["python", "-m", "bench.report", *argv]),
                  find_published(runs, args.published))
    run_id = log_report_run(args.tracking_uri, experiment.experiment_id, args.out, files, runs)
    print(f"wrote {len(files)} files to {args.out}/ and logged them to report run {run_id}\n"
          + browse_text(args.tracking_uri, experiment.experiment_id))
    return 0
