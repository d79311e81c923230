"""CoxNet: the linear genomic floor, sksurv's `CoxnetSurvivalAnalysis` (elastic-net Cox, coordinate descent).

Omics only. Input: the six signature groups, z-scored on the training side (bench.fold.OmicScaler; a
constant column stays 0, never divided by zero), concatenated as `snn` takes them. Risk is the linear
predictor x'beta; survival S(t | x) = exp(-H0(t) e^{x'beta}) with H0 Breslow's cumulative baseline hazard
on the training side (as sksurv's `BreslowEstimator`), at the bin edges so the Brier score and the
time-dependent AUC read it.

The penalty is tuned as `alpha_ratio`, a fraction of alpha_max (the smallest alpha that zeroes every
coefficient, which depends on the data and on `l1_ratio`), and fitted as glmnet fits it: the path from
alpha_max down to alpha_ratio * alpha_max, each fit warm-started from the one before. Why: with ~3,400
genes and ~50 training patients an absolute alpha is meaningless across cohorts and l1 ratios, and a cold
fit at one small alpha diverged ("weights are too large") on 3 of 25 default jobs. The search range,
0.01-1, is sksurv's own path range when features outnumber patients. Breslow's H0 and S are computed in
log space: an almost unpenalised fit spreads the linear predictor over hundreds, so a direct sum's
e^{lp - max} underflowed to 0 for a late risk set and the curves came out NaN (8 of 25 default jobs).

No reference publishes a setting: under `--protocol paper` it runs `paper_defaults` (alpha_ratio 0.1,
l1_ratio 0.5, the middle of the search space), which no result chose.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sksurv.linear_model import CoxnetSurvivalAnalysis

from .base import OMICS, SurvivalEstimator
from .registry import DEFAULT_OMIC_SIZES, register_model

PATH_LENGTH = 100  # alphas on the warm-started path, alpha_max down to the target (sksurv's default count)


def breslow_log_cumhaz(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct death times, log H0 at each): H0(t) = sum over deaths t_j <= t of d_j / sum_{T_i >= t_j} e^{lp_i}."""
    lp, time, event = np.asarray(lp, float), np.asarray(time, float), np.asarray(event, bool)
    times, deaths = np.unique(time[event], return_counts=True)
    order = np.argsort(-time, kind="stable")  # latest first: a running log-sum gives each time's risk set
    log_risk = np.logaddexp.accumulate(lp[order])
    n_at_risk = np.searchsorted(-time[order], -times, side="right")  # patients with T >= t_j
    log_hazard = np.log(deaths) - log_risk[n_at_risk - 1]
    return times, np.logaddexp.accumulate(log_hazard)


def breslow_survival(lp: np.ndarray, base_time: np.ndarray, base_log_cumhaz: np.ndarray, times) -> np.ndarray:
    """S(t | x) = exp(-H0(t) e^lp), P(T >= t): only deaths before t count; computed in log space."""
    idx = np.searchsorted(base_time, np.asarray(times, float), side="left")
    log_h0 = np.concatenate([[-np.inf], base_log_cumhaz])[idx]
    with np.errstate(over="ignore"):  # a cumulative hazard past float range is a survival of exactly 0
        return np.exp(-np.exp(np.asarray(lp, float)[:, None] + log_h0[None, :]))


@register_model
class CoxNet(SurvivalEstimator):
    name = "coxnet"
    train_modalities = frozenset({OMICS})
    infer_modalities = frozenset({OMICS})
    relative_job_cost = 0.06  # bench.perf sweep, blca fold 0: job-seconds / abmil's (4.7 s in the same run)
    paper_defaults = {"alpha_ratio": 0.1, "l1_ratio": 0.5}
    state_keys = ("coef", "offset", "alpha", "base_time", "base_log_cumhaz")

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, alpha_ratio=0.1, l1_ratio=0.5):
        if not 0 < alpha_ratio <= 1 or not 0 < l1_ratio <= 1:
            raise ValueError(f"coxnet needs alpha_ratio and l1_ratio in (0, 1], got {alpha_ratio} and {l1_ratio}")
        self.n_features = int(sum(omic_sizes))
        self.alpha_ratio, self.l1_ratio = float(alpha_ratio), float(l1_ratio)
        self.coef = self.offset = self.alpha = self.base_time = self.base_log_cumhaz = None

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "alpha_ratio": trial.suggest_float("alpha_ratio", 0.01, 1.0, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.05, 1.0),
        }

    def _design(self, omics: list[np.ndarray], clinical: pd.DataFrame | None = None) -> np.ndarray:
        x = np.concatenate([np.asarray(o, dtype=np.float64) for o in omics], axis=1)
        if x.shape[1] != self.n_features:
            raise ValueError(f"coxnet was built for {self.n_features} genomic values, got {x.shape[1]}")
        return x

    def _penalty_factor(self) -> np.ndarray | None:
        """Per design column (None: every column penalised alike)."""
        return None

    def fit(self, omics, time, event, clinical=None) -> "CoxNet":
        x, time, event = self._design(omics, clinical), np.asarray(time, float), np.asarray(event, bool)
        y = np.array(list(zip(event, time)), dtype=[("event", bool), ("time", float)])
        factor = self._penalty_factor()
        est = CoxnetSurvivalAnalysis(n_alphas=PATH_LENGTH, alpha_min_ratio=self.alpha_ratio, l1_ratio=self.l1_ratio,
                                     max_iter=100_000, **({} if factor is None else {"penalty_factor": factor}))
        with warnings.catch_warnings():  # alpha_ratio 1 is the null model on purpose: every coefficient zero
            warnings.filterwarnings("ignore", message="all coefficients are zero")
            est.fit(x, y)
        self.coef, self.alpha = est.coef_[:, -1].copy(), np.array(est.alphas_[-1])
        self.offset = np.array(est.offset_[-1])  # sksurv centres x on the training mean
        self.base_time, self.base_log_cumhaz = breslow_log_cumhaz(x @ self.coef - self.offset, time, event)
        return self

    def predict(self, omics, times, clinical=None) -> tuple[np.ndarray, np.ndarray]:
        if self.coef is None:
            raise ValueError(f"{self.name}: predict before fit")
        lp = self._design(omics, clinical) @ self.coef - self.offset
        return lp, breslow_survival(lp, self.base_time, self.base_log_cumhaz, times)

    def coefficients_expected(self) -> tuple[int, str]:
        return self.n_features, "genomic values"
