"""Discrete-time survival primitives shared by every model: labels, loss, risk, C-index.

Conventions (MCAT code, data_formats.md sections 5, 8, 9): `censorship` 1 = censored;
`event` = 1 - censorship; 4 bins cut at quartiles of uncensored times with left-closed
intervals; hazards h = sigmoid(logits); S_k = prod_{j<=k} (1 - h_j); risk = -sum_k S_k.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sksurv.metrics import concordance_index_censored

EPS = 1e-7


def fit_bin_edges(time: np.ndarray, event: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Cut points from quantiles of uncensored times, outer edges widened to cover all times.

    Returns `n_bins + 1` edges. Pass the whole cohort (paper protocol) or a training subset
    (nested protocol); either way the caller decides which patients inform the cut.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    if event.sum() < n_bins:
        raise ValueError(f"need at least {n_bins} uncensored patients to cut {n_bins} bins, got {int(event.sum())}")
    _, edges = pd.qcut(time[event], q=n_bins, retbins=True, labels=False)
    edges = np.asarray(edges, dtype=float)
    edges[0] = time.min() - 1e-6
    edges[-1] = time.max() + 1e-6
    return edges


def assign_bins(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per time with left-closed intervals [a_k, a_k+1); times outside are clipped."""
    inner = np.asarray(edges, dtype=float)[1:-1]
    return np.searchsorted(inner, np.asarray(time, dtype=float), side="right").astype(np.int64)


def survival_curve(logits: torch.Tensor) -> torch.Tensor:
    """S_k = prod_{j<=k} (1 - sigmoid(logit_j)), shape like `logits`."""
    return torch.cumprod(1.0 - torch.sigmoid(logits), dim=-1)


def risk_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Risk = -sum_k S_k (higher = worse), one value per row."""
    return -survival_curve(logits).sum(dim=-1)


def nll_loss(logits: torch.Tensor, bins: torch.Tensor, censorship: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    """Per-patient discrete-time NLL (MCAT `nll_loss`), shape [B]; the caller reduces.

    uncensored: -log S_{y-1} - log h_y;  censored: -log S_y;  S_{-1} = 1.
    loss = (1 - alpha) * (uncensored + censored) + alpha * uncensored. Probabilities clamp at 1e-7.
    """
    hazards = torch.sigmoid(logits)
    surv = torch.cumprod(1.0 - hazards, dim=-1)
    surv_padded = torch.cat([torch.ones_like(surv[:, :1]), surv], dim=1)
    y = bins.long().view(-1, 1)
    c = censorship.to(logits.dtype).view(-1)
    s_prev = torch.gather(surv_padded, 1, y).clamp_min(EPS).view(-1)
    h_y = torch.gather(hazards, 1, y).clamp_min(EPS).view(-1)
    s_y = torch.gather(surv_padded, 1, y + 1).clamp_min(EPS).view(-1)
    uncensored = -(1.0 - c) * (torch.log(s_prev) + torch.log(h_y))
    censored = -c * torch.log(s_y)
    return (1.0 - alpha) * (uncensored + censored) + alpha * uncensored


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C (sksurv, tied_tol 1e-8). NaN with a warning when no pair is comparable."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    risk = np.asarray(risk, dtype=float)
    if not event.any():
        warnings.warn("C-index undefined: no events among these patients; returning NaN", stacklevel=2)
        return float("nan")
    try:
        return float(concordance_index_censored(event, time, risk, tied_tol=1e-8)[0])
    except ValueError as err:  # sksurv raises when there is no comparable pair
        warnings.warn(f"C-index undefined ({err}); returning NaN", stacklevel=2)
        return float("nan")
