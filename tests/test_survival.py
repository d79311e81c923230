"""Survival primitives against hand arithmetic and an independent Harrell's C (data_formats.md sections 5, 8, 9)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from bench.survival import assign_bins, c_index, fit_bin_edges, nll_loss, risk_from_logits, survival_curve

# Hazards chosen so every S_k is exact in decimal: S = cumprod(1 - h) = 0.9, 0.72, 0.36, 0.072.
HAZARDS = torch.tensor([0.1, 0.2, 0.5, 0.8], dtype=torch.float64)
LOGITS = torch.log(HAZARDS / (1 - HAZARDS))
S = [0.9, 0.72, 0.36, 0.072]


def test_survival_curve_and_risk_follow_the_hazards():
    """S_k = prod_{j<=k} (1 - h_j) and risk = -sum_k S_k, row by row."""
    logits = torch.stack([LOGITS, torch.zeros(4, dtype=torch.float64)])
    surv = survival_curve(logits)
    assert torch.allclose(surv[0], torch.tensor(S, dtype=torch.float64))
    assert torch.allclose(surv[1], torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float64))
    risk = risk_from_logits(logits)
    assert risk.shape == (2,)
    assert risk[0].item() == pytest.approx(-(0.9 + 0.72 + 0.36 + 0.072))
    assert risk[1].item() == pytest.approx(-0.9375)
    assert risk[0] < risk[1]  # lower hazards -> more expected survival -> lower risk


def test_nll_loss_equals_hand_arithmetic():
    """Four patients, one per case of the formula; alpha scales the censored term only.

    A: event in bin 0:  -log S_-1 - log h_0 = -log 1 - log 0.1
    B: event in bin 2:  -log S_1  - log h_2 = -log 0.72 - log 0.5
    C: censored in bin 1: -log S_1 = -log 0.72
    D: censored in bin 3: -log S_3 = -log 0.072
    loss = (1 - a)(unc + cens) + a * unc, so uncensored rows do not depend on a and censored rows scale by 1 - a.
    """
    logits = LOGITS.expand(4, 4).clone()
    bins = torch.tensor([0, 2, 1, 3])
    cens = torch.tensor([0, 0, 1, 1])
    unc_a = -math.log(1.0) - math.log(0.1)
    unc_b = -math.log(0.72) - math.log(0.5)
    cen_c = -math.log(0.72)
    cen_d = -math.log(0.072)
    loss0 = nll_loss(logits, bins, cens, alpha=0.0)
    assert loss0.shape == (4,)
    assert loss0.tolist() == pytest.approx([unc_a, unc_b, cen_c, cen_d], rel=1e-9)
    loss4 = nll_loss(logits, bins, cens, alpha=0.4)
    assert loss4.tolist() == pytest.approx([unc_a, unc_b, 0.6 * cen_c, 0.6 * cen_d], rel=1e-9)


def test_nll_loss_clamps_probabilities_at_1e_7():
    """A vanishing hazard gives -log(1e-7), not inf, and the gradient stays finite."""
    logits = torch.tensor([[-60.0, 0.0, 0.0, 0.0]], requires_grad=True)
    loss = nll_loss(logits, torch.tensor([0]), torch.tensor([0]))
    assert loss.item() == pytest.approx(-math.log(1e-7), rel=1e-5)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


def harrell_c(time, event, risk) -> float:
    """Independent O(n^2) Harrell's C: pairs (i, j) with t_i < t_j and i an event; risk ties count 1/2."""
    num = den = 0.0
    for i in range(len(time)):
        if not event[i]:
            continue
        for j in range(len(time)):
            if time[i] < time[j]:
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return num / den


def test_c_index_equals_sksurv_and_a_brute_force_count(rng):
    """Random continuous times (no time ties), coarse risks (many risk ties)."""
    for _ in range(3):
        n = 60
        time = rng.exponential(20.0, n)
        event = rng.uniform(size=n) < 0.4
        risk = np.round(rng.normal(size=n) - 0.02 * time, 1)
        got = c_index(time, event.astype(int), risk)
        assert got == pytest.approx(concordance_index_censored(event, time, risk, tied_tol=1e-8)[0], abs=1e-12)
        assert got == pytest.approx(harrell_c(time, event, risk), abs=1e-12)
    assert c_index([1.0, 2.0, 3.0], [1, 1, 0], [3.0, 2.0, 1.0]) == 1.0
    assert c_index([1.0, 2.0, 3.0], [1, 1, 0], [1.0, 2.0, 3.0]) == 0.0


def test_c_index_is_nan_with_a_warning_when_undefined():
    with pytest.warns(UserWarning, match="no events"):
        assert math.isnan(c_index([1.0, 2.0, 3.0], [0, 0, 0], [0.1, 0.2, 0.3]))
    # one event, at the longest time: it has no comparable pair
    with pytest.warns(UserWarning, match="undefined"):
        assert math.isnan(c_index([1.0, 2.0, 3.0], [0, 0, 1], [0.1, 0.2, 0.3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not math.isnan(c_index([1.0, 2.0], [1, 0], [0.3, 0.1]))


def test_bin_edges_are_event_quartiles_with_widened_outer_edges():
    """Inner cuts come from uncensored times only; outer edges are min/max over all times -/+ 1e-6."""
    time = np.array([0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 50.0])
    event = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    edges = fit_bin_edges(time, event)
    # quartiles of 1..8 (pandas linear interpolation): 2.75, 4.5, 6.25
    assert edges[1:-1].tolist() == pytest.approx([2.75, 4.5, 6.25])
    assert edges[0] == pytest.approx(0.5 - 1e-6, abs=1e-12)
    assert edges[-1] == pytest.approx(50.0 + 1e-6, abs=1e-12)
    assert edges[0] < time.min() and edges[-1] > time.max()


def test_bins_are_left_closed():
    """A time equal to a cut point falls in the bin that starts there: [a_k, a_k+1)."""
    edges = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    t = np.array([0.0, 9.999, 10.0, 19.999, 20.0, 30.0, 39.9])
    assert assign_bins(t, edges).tolist() == [0, 0, 1, 1, 2, 3, 3]


def test_fit_bin_edges_needs_an_event_per_bin():
    with pytest.raises(ValueError, match="uncensored"):
        fit_bin_edges(np.arange(1.0, 9.0), np.array([1, 1, 1, 0, 0, 0, 0, 0]))
