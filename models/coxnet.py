"""CoxNet: the linear genomic floor, sksurv's `CoxnetSurvivalAnalysis` (elastic-net Cox, coordinate descent).

Omics only. Input: the six signature groups, z-scored on the training side (bench.fold.OmicScaler; a
constant column stays 0, never divided by zero), concatenated as `snn` takes them. One fit per call at
the given `alpha` (penalty strength) and `l1_ratio` (1 = lasso); both are tuned by the nested protocol
on the inner split only. Risk is the linear predictor x'beta; survival S(t | x) = exp(-H0(t) e^{x'beta})
with H0 Breslow's cumulative baseline hazard on the training side (as sksurv's `BreslowEstimator`),
evaluated at the bin edges so the Brier score and the time-dependent AUC read it.

No reference publishes a setting: under `--protocol paper` it runs `paper_defaults` (alpha 0.1,
l1_ratio 0.5, the middle of the search space), which no result chose.
"""

from __future__ import annotations

import numpy as np
import torch
from sksurv.linear_model import CoxnetSurvivalAnalysis

from .base import OMICS, SurvivalEstimator
from .registry import DEFAULT_OMIC_SIZES, register_model


def breslow_cumulative_hazard(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct death times, H0 at each): the sum over deaths up to t of d_j / sum_{T_i >= t_j} e^{lp_i}."""
    lp, time, event = np.asarray(lp, float), np.asarray(time, float), np.asarray(event, bool)
    times = np.unique(time[event])
    risk = np.exp(lp - lp.max())  # shifted for overflow; the shift comes back below
    at_risk = np.array([risk[time >= t].sum() for t in times])
    deaths = np.array([np.sum(event & (time == t)) for t in times])
    return times, np.cumsum(deaths / at_risk) * np.exp(-lp.max())


@register_model
class CoxNet(SurvivalEstimator):
    name = "coxnet"
    train_modalities = frozenset({OMICS})
    infer_modalities = frozenset({OMICS})
    relative_job_cost = 0.1  # a few coordinate-descent fits per job, no epochs
    paper_defaults = {"alpha": 0.1, "l1_ratio": 0.5}
    _STATE = ("coef", "offset", "base_time", "base_cumhaz")

    def __init__(self, *, path_dim=1024, omic_sizes=DEFAULT_OMIC_SIZES, n_bins=4, alpha=0.1, l1_ratio=0.5):
        if not alpha > 0 or not 0 < l1_ratio <= 1:
            raise ValueError(f"coxnet needs alpha > 0 and l1_ratio in (0, 1], got {alpha} and {l1_ratio}")
        self.n_features = int(sum(omic_sizes))
        self.alpha, self.l1_ratio = float(alpha), float(l1_ratio)
        self.coef = self.offset = self.base_time = self.base_cumhaz = None

    @staticmethod
    def search_space(trial) -> dict:
        return {
            "alpha": trial.suggest_float("alpha", 1e-3, 10.0, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.05, 1.0),
        }

    def _design(self, omics: list[np.ndarray]) -> np.ndarray:
        x = np.concatenate([np.asarray(o, dtype=np.float64) for o in omics], axis=1)
        if x.shape[1] != self.n_features:
            raise ValueError(f"coxnet was built for {self.n_features} genomic values, got {x.shape[1]}")
        return x

    def fit(self, omics, time, event) -> "CoxNet":
        x, time, event = self._design(omics), np.asarray(time, float), np.asarray(event, bool)
        y = np.array(list(zip(event, time)), dtype=[("event", bool), ("time", float)])
        est = CoxnetSurvivalAnalysis(alphas=[self.alpha], l1_ratio=self.l1_ratio, max_iter=100_000)
        est.fit(x, y)
        self.coef = est.coef_[:, 0].copy()
        self.offset = np.array(np.mean(x @ self.coef - est.predict(x)))  # sksurv centres x on the training mean
        self.base_time, self.base_cumhaz = breslow_cumulative_hazard(x @ self.coef - self.offset, time, event)
        return self

    def predict(self, omics, times) -> tuple[np.ndarray, np.ndarray]:
        if self.coef is None:
            raise ValueError("coxnet: predict before fit")
        lp = self._design(omics) @ self.coef - self.offset
        idx = np.searchsorted(self.base_time, np.asarray(times, float), side="left")  # deaths before t: P(T >= t)
        h0 = np.concatenate([[0.0], self.base_cumhaz])[idx]
        return lp, np.exp(-np.outer(np.exp(lp), h0))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(getattr(self, k), dtype=torch.float64) for k in self._STATE}

    def load_state_dict(self, state, strict: bool = True):
        if strict and set(state) != set(self._STATE):
            raise RuntimeError(f"coxnet state needs {', '.join(self._STATE)}, got {sorted(state)}")
        if len(state["coef"]) != self.n_features:
            raise RuntimeError(f"coxnet state has {len(state['coef'])} coefficients for {self.n_features} genomic values")
        for k, v in state.items():
            setattr(self, k, v.numpy())
        return self
