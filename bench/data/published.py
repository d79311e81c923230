"""MCAT's released per-fold validation C-indices: which experiments, where they lie, read and checked.

MCAT (mahmoodlab/MCAT, results/ICCV) released, per experiment and cohort, the val-fold C-index of each of
the 25 splits this suite runs. `python -m bench.data fetch` puts them under a data root as
`<root>/published/mcat/<experiment>/summary_latest_tcga_<cohort>.csv` (columns: index, `folds` 0-4,
`val_cindex`); the report pairs our folds with them. The labels and their experiments live here alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.layout import COHORTS, N_FOLDS, study
from bench.errors import BenchError

# table label -> MCAT experiment (results/ICCV/<experiment>); AMIL is MCAT's WSI-only ABMIL, AMIL+SNN its concat fusion
MODELS = {"MCAT": "MCATsm_nll_surv_a0.0_5foldcv_gc32_concat",
          "AMIL": "AMILsm_nll_surv_a0.0_5foldcv_gc32_sig",
          "AMIL+SNN": "AMILsm_nll_surv_a0.0_5foldcv_gc32_sig_concat",
          "SNN": "SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig"}
SUBDIR = Path("published", "mcat")
COLUMNS = ["label", "experiment", "cohort", "fold", "c_index"]


def summary_path(folder: Path, experiment: str, cohort: str) -> Path:
    """Where one experiment's per-fold file for a cohort lies in a folder of experiments."""
    return Path(folder) / experiment / f"summary_latest_{study(cohort)}.csv"


def folder_of(path: Path) -> Path:
    """The folder of experiments: `<path>/published/mcat` when `path` is a data root holding one, else `path`."""
    path = Path(path)
    return path / SUBDIR if (path / SUBDIR).is_dir() else path


def read_summary(path: Path) -> pd.DataFrame:
    """One released file as (fold, c_index), checked: folds exactly 0..4, every C-index a number in [0, 1]."""
    def bad(problem: str) -> BenchError:
        return BenchError(f"{path} is not one of MCAT's released per-fold C-index files: {problem}. It should hold "
                          f"the columns folds (0-{N_FOLDS - 1}, one row each) and val_cindex (in [0, 1]), as "
                          "results/ICCV/<experiment>/tcga_<cohort>_<experiment>_s1/summary_latest.csv of "
                          "mahmoodlab/MCAT. Delete it and rerun `python -m bench.data fetch --out <data root>`, "
                          "which downloads the pinned file and checks its sha256.")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise bad(f"not a readable CSV ({' '.join(str(err).split())})") from None
    missing = [c for c in ("folds", "val_cindex") if c not in table.columns]
    if missing:
        raise bad(f"no column {', '.join(missing)} (found {', '.join(map(str, table.columns))})")
    folds = pd.to_numeric(table["folds"], errors="coerce")
    if sorted(folds.tolist()) != list(range(N_FOLDS)):
        raise bad(f"folds {', '.join(map(str, table['folds'].tolist()))} instead of 0-{N_FOLDS - 1}")
    c = pd.to_numeric(table["val_cindex"], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(c) & (c >= 0) & (c <= 1)).all():
        raise bad(f"val_cindex {', '.join(map(str, table['val_cindex'].tolist()))} not all in [0, 1]")
    return pd.DataFrame({"fold": folds.astype(int).to_numpy(), "c_index": c}).sort_values("fold", ignore_index=True)


def read_published(folder: Path, cohorts=COHORTS) -> pd.DataFrame:
    """Every released file present in a folder of experiments, tidy: one row per (label, cohort, fold).

    Absent files are skipped (a data root holds the cohorts it fetched); an empty frame means none is there.
    """
    parts = []
    for label, experiment in MODELS.items():
        for cohort in cohorts:
            path = summary_path(folder, experiment, cohort)
            if path.is_file():
                parts.append(read_summary(path).assign(label=label, experiment=experiment, cohort=cohort))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True)[COLUMNS]
