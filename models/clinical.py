"""Clinical Cox: the floor every slide model must clear, a ridge Cox model on the table's patient covariates.

Covariates: `age`, `is_female` and `oncotree_code` (the subtype, one-hot) of the MCAT tables. Everything
the encoding learns is fitted on the training side only, in `prepare`, so it travels in the saved model's
kwargs: a missing numeric value takes the training median; a subtype's reference level is the most
frequent training subtype (ties alphabetical) and is dropped, so a subtype unseen in training (or a
missing one) is scored as the reference level and counted (`unseen_values`); every design column is then
z-scored with the training mean and std, and a column constant on the training side is dropped (UCEC's
all-female `is_female`; BLCA and LUAD have one subtype, so no subtype column). The fit is sksurv's
`CoxPHSurvivalAnalysis` (Breslow ties) with its ridge penalty `alpha` (on the sum scale: the average
negative partial log-likelihood plus alpha ||b||^2 / 2n), tuned by the nested protocol; risk is the linear
predictor and S(t | x) Breslow's, as for CoxNet.

`site` (tissue source site) is left out by default: it is a centre, not a patient property. TCGA slides
and outcomes differ by centre (staining, scanner, follow-up practice), the MCAT splits are not stratified
by site, and a model on site learns those centre effects, which no new hospital shares. `clinical_site`
adds it, for measuring how much a centre effect alone predicts; the model name records the choice.

No reference publishes a setting: under `--protocol paper` it runs alpha 1 (`paper_defaults`), which no
result chose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sksurv.linear_model import CoxPHSurvivalAnalysis

from .base import CLINICAL, SurvivalEstimator
from .coxnet import breslow_log_cumhaz, breslow_survival
from .registry import DEFAULT_OMIC_SIZES, register_model

CLINICAL_COLUMNS = ("age", "is_female", "oncotree_code")
CATEGORICAL = frozenset({"oncotree_code", "site"})


def _categories(frame: pd.DataFrame, column: str) -> pd.Series:
    """A categorical column as text, NaN kept (an integer-coded site and its text read the same)."""
    values = frame[column]
    return values.where(values.isna(), values.astype(str))


def _raw_design(frame: pd.DataFrame, encoding: dict) -> tuple[np.ndarray, list[str]]:
    """Imputed numeric columns and one-hot non-reference levels, before scaling: (matrix, column names)."""
    cols, names = [], []
    for column in encoding["columns"]:
        if column in CATEGORICAL:
            values = _categories(frame, column)
            for level in encoding["levels"][column][1:]:  # the first level is the reference
                cols.append((values == level).to_numpy(np.float64))
                names.append(f"{column}={level}")
        else:
            values = pd.to_numeric(frame[column], errors="coerce")
            cols.append(values.fillna(encoding["fill"][column]).to_numpy(np.float64))
            names.append(column)
    matrix = np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))
    return matrix, names


def fit_encoding(frame: pd.DataFrame, columns) -> dict:
    """The encoding of `columns`, learnt from the training side's rows of `frame` only (plain data: JSON-ready)."""
    encoding = {"columns": list(columns), "fill": {}, "levels": {}}
    for column in columns:
        if column in CATEGORICAL:
            counts = _categories(frame, column).dropna().value_counts()
            encoding["levels"][column] = sorted(counts.index, key=lambda level: (-counts[level], level))
        else:
            values = pd.to_numeric(frame[column], errors="coerce")
            encoding["fill"][column] = float(values.median()) if values.notna().any() else 0.0
    x, names = _raw_design(frame, encoding)
    keep = np.ptp(x, axis=0) > 0 if len(x) else np.zeros(len(names), bool)
    encoding["design"] = [n for n, k in zip(names, keep) if k]
    encoding["mean"] = x[:, keep].mean(axis=0).tolist()
    encoding["std"] = x[:, keep].std(axis=0).tolist()
    return encoding


def encode(frame: pd.DataFrame, encoding: dict) -> np.ndarray:
    """The z-scored design matrix [n, len(encoding['design'])] of these patients under a fitted encoding."""
    x, names = _raw_design(frame, encoding)
    index = {n: i for i, n in enumerate(names)}
    x = x[:, [index[n] for n in encoding["design"]]]
    return (x - np.asarray(encoding["mean"])) / np.asarray(encoding["std"])


def unseen_values(frame: pd.DataFrame, encoding: dict) -> dict[str, int]:
    """Patients whose value the training side did not provide: `<column>_unseen` (a level absent from training,
    scored as the reference) and `<column>_missing` (empty, scored as the reference or the training median)."""
    counts = {}
    for column in encoding["columns"]:
        values = _categories(frame, column) if column in CATEGORICAL else pd.to_numeric(frame[column], errors="coerce")
        counts[f"{column}_missing"] = int(values.isna().sum())
        if column in CATEGORICAL:
            counts[f"{column}_unseen"] = int((values.notna() & ~values.isin(encoding["levels"][column])).sum())
    return counts


@register_model
class ClinicalCox(SurvivalEstimator):
    name = "clinical"
    train_modalities = frozenset({CLINICAL})
    infer_modalities = frozenset({CLINICAL})
    relative_job_cost = 0.02
    paper_defaults = {"alpha": 1.0}
    clinical_columns = CLINICAL_COLUMNS
    state_keys = ("coef", "base_time", "base_log_cumhaz")

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, clinical_encoding=None, alpha=1.0):
        if clinical_encoding is None:
            raise ValueError(f"{self.name} needs the clinical_encoding its prepare() fits on the training side")
        if not alpha > 0:
            raise ValueError(f"{self.name} needs a ridge penalty alpha > 0, got {alpha}")
        self.encoding, self.alpha = clinical_encoding, float(alpha)
        self.coef = self.base_time = self.base_log_cumhaz = None

    @staticmethod
    def search_space(trial) -> dict:
        return {"alpha": trial.suggest_float("alpha", 1e-2, 1e3, log=True)}

    @classmethod
    def prepare(cls, omics, bins, event, clinical=None) -> dict:
        if clinical is None:
            raise ValueError(f"{cls.name} reads the clinical columns: the training side carries none")
        return {"clinical_encoding": fit_encoding(clinical, cls.clinical_columns)}

    def fit(self, omics, time, event, clinical=None) -> "ClinicalCox":
        x, time, event = encode(clinical, self.encoding), np.asarray(time, float), np.asarray(event, bool)
        if x.shape[1]:
            y = np.array(list(zip(event, time)), dtype=[("event", bool), ("time", float)])
            self.coef = CoxPHSurvivalAnalysis(alpha=self.alpha, ties="breslow").fit(x, y).coef_.copy()
        else:  # every covariate constant on the training side: the null model, Breslow's curve for all
            self.coef = np.zeros(0)
        self.base_time, self.base_log_cumhaz = breslow_log_cumhaz(x @ self.coef, time, event)
        return self

    def predict(self, omics, times, clinical=None) -> tuple[np.ndarray, np.ndarray]:
        if self.coef is None:
            raise ValueError(f"{self.name}: predict before fit")
        lp = encode(clinical, self.encoding) @ self.coef
        return lp, breslow_survival(lp, self.base_time, self.base_log_cumhaz, times)

    def coefficients_expected(self) -> tuple[int, str]:
        return len(self.encoding["design"]), "design columns of its encoding"


@register_model
class ClinicalCoxSite(ClinicalCox):
    """Clinical Cox with the tissue source site (a centre effect: see the module docstring)."""

    name = "clinical_site"
    clinical_columns = (*CLINICAL_COLUMNS, "site")
