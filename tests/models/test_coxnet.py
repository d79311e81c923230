"""CoxNet: sksurv's Coxnet behind the registry's estimator contract, Breslow survival, and constant columns."""

import numpy as np
import pytest
import torch
from sksurv.linear_model import CoxnetSurvivalAnalysis

from bench.fold import OmicScaler, PatientSet
from bench.train import TrainSettings, fit, predict
from models import SurvivalEstimator, create_model, get_model_class
from models.coxnet import breslow_log_cumhaz

SIZES = (5, 7, 3, 4, 6, 5)


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    omics = [rng.standard_normal((n, s)) for s in SIZES]
    lp = omics[0][:, 0] - omics[1][:, 2]
    time = rng.exponential(10 * np.exp(-lp))
    cens = rng.exponential(15, n)
    return omics, np.minimum(time, cens), (time <= cens).astype(int)


def test_is_an_estimator_not_a_network():
    cls = get_model_class("coxnet")
    assert cls.estimator and issubclass(cls, SurvivalEstimator) and not issubclass(cls, torch.nn.Module)


def test_risk_is_sksurvs_linear_predictor_and_survival_its_breslow_function():
    """The fit is sksurv's own warm-started path down to alpha_ratio * alpha_max; risk and S equal its
    predict and predict_survival_function at the path's last alpha."""
    omics, time, event = _data()
    model = create_model("coxnet", omic_sizes=SIZES, alpha_ratio=0.05, l1_ratio=0.5).fit(omics, time, event)
    x = np.concatenate(omics, axis=1)
    y = np.array(list(zip(event.astype(bool), time)), dtype=[("e", bool), ("t", float)])
    ref = CoxnetSurvivalAnalysis(alpha_min_ratio=0.05, l1_ratio=0.5, fit_baseline_model=True).fit(x, y)
    alpha = ref.alphas_[-1]
    assert model.alpha == alpha and np.isclose(alpha, 0.05 * ref.alphas_[0])
    times = np.quantile(time[event == 1], [0.2, 0.5, 0.8]) + 1e-9  # between deaths: P(T >= t) = P(T > t)
    risk, surv = model.predict(omics, times)
    np.testing.assert_allclose(risk, ref.predict(x, alpha=alpha), rtol=1e-10, atol=1e-12)
    want = np.stack([fn(times) for fn in ref.predict_survival_function(x, alpha=alpha)])
    np.testing.assert_allclose(surv, want, rtol=1e-8, atol=1e-12)
    assert (np.diff(surv, axis=1) <= 0).all()


def test_breslow_in_log_space_equals_the_direct_sum_and_survives_a_huge_linear_predictor():
    """An almost unpenalised fit on ~3,400 genes spread its linear predictor so far that the direct Breslow sum
    (risk sets of e^{lp - max}) underflowed to 0 and gave NaN survival curves (8 of 25 default jobs failed)."""
    rng = np.random.default_rng(1)
    time, event = rng.integers(1, 30, 60).astype(float), rng.random(60) < 0.6  # tied times on purpose
    lp = rng.standard_normal(60)
    times, log_h0 = breslow_log_cumhaz(lp, time, event)
    direct = np.cumsum([np.sum(event & (time == t)) / np.exp(lp[time >= t]).sum() for t in times])
    np.testing.assert_allclose(np.exp(log_h0), direct, rtol=1e-12)
    shifted = breslow_log_cumhaz(lp + 800.0, time, event)[1]  # e^800 is past float range
    np.testing.assert_allclose(shifted, log_h0 - 800.0, rtol=1e-12)
    omics, t, e = _data()
    model = create_model("coxnet", omic_sizes=SIZES, alpha_ratio=0.05).fit(omics, t, e)
    _, surv = model.predict([o * 1e4 for o in omics], [1.0, 5.0, 10.0])
    assert np.isfinite(surv).all() and surv.min() == 0.0 and surv.max() == 1.0


def test_the_smallest_penalty_of_the_search_fits_where_a_cold_fit_diverges():
    """p >> n, as on the default cohorts (3,392 genes, ~45 patients): a cold fit at one small absolute alpha
    raised "weights are too large"; the warm-started path to that alpha (alpha_ratio 0.01) fits."""
    rng = np.random.default_rng(2)
    n, sizes = 45, (94, 334, 521, 468, 1496, 479)
    omics = [rng.standard_normal((n, s)) for s in sizes]
    lp = omics[0][:, 0] + omics[3][:, 5]
    t, c = rng.exponential(10 * np.exp(-lp)), rng.exponential(8, n)
    time, event = np.minimum(t, c), (t <= c).astype(int)
    x, y = np.concatenate(omics, axis=1), np.array(list(zip(event == 1, time)), dtype=[("e", bool), ("t", float)])
    for l1_ratio in (0.05, 0.5):
        model = create_model("coxnet", omic_sizes=sizes, alpha_ratio=0.01, l1_ratio=l1_ratio).fit(omics, time, event)
        risk, surv = model.predict(omics, [2.0, 5.0])
        assert np.isfinite(risk).all() and np.isfinite(surv).all() and np.count_nonzero(model.coef) > 0
        if l1_ratio == 0.05:  # the trap: the same alpha, fitted cold (at 0.5 it fails too, after 20 s)
            with pytest.raises(ArithmeticError, match="weights are too large"):
                CoxnetSurvivalAnalysis(alphas=[float(model.alpha)], l1_ratio=l1_ratio, max_iter=100_000).fit(x, y)
    alpha_max = CoxnetSurvivalAnalysis(l1_ratio=0.05, n_alphas=2, alpha_min_ratio=1.0).fit(x, y).alphas_[0]
    null = create_model("coxnet", omic_sizes=sizes, alpha_ratio=1.0, l1_ratio=0.05).fit(omics, time, event)
    assert np.count_nonzero(null.coef) == 0 and null.alpha == alpha_max  # alpha_max zeroes every coefficient: the search's upper end is the null model


def test_state_dict_round_trip_scores_the_same():
    omics, time, event = _data()
    model = create_model("coxnet", omic_sizes=SIZES).fit(omics, time, event)
    again = create_model("coxnet", omic_sizes=SIZES)
    again.load_state_dict(model.state_dict())
    for a, b in zip(model.predict(omics, [1.0, 5.0]), again.predict(omics, [1.0, 5.0])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="coefficients"):
        create_model("coxnet", omic_sizes=(1, 1, 1, 1, 1, 1)).load_state_dict(model.state_dict())


def test_a_constant_genomic_column_is_never_divided_by_zero():
    """0.1 repeated has a float std of ~1e-17, not 0: the scaler must still leave it unscaled, so a held-out
    patient with another value stays finite and small, and the Coxnet fit sees a zero column."""
    omics, time, event = _data()
    omics[2][:, 1] = 0.1
    assert omics[2][:, 1].std() > 0  # the trap: not exactly zero
    scaler = OmicScaler(omics)
    scaled = scaler.transform(omics)
    assert np.abs(scaled[2][:, 1]).max() < 1e-6
    held_out = [o[:3].copy() for o in omics]
    held_out[2][:, 1] = 0.7
    assert np.abs(scaler.transform(held_out)[2][:, 1]).max() < 1.0
    edges = np.array([0.0, 2.0, 5.0, 10.0, time.max() + 1])
    pset = PatientSet(case_ids=[f"p{i}" for i in range(len(time))], time=time, event=event,
                      bins=np.searchsorted(edges[1:-1], time, side="right"), omics=scaled, bags=None, edges=edges)
    result = fit("coxnet", pset, {"alpha_ratio": 0.05, "l1_ratio": 0.5}, TrainSettings())
    assert result.model.coef[sum(SIZES[:2]) + 1] == 0.0
    pred = predict(result.model, pset, TrainSettings())
    assert list(pred.columns[6:10]) == ["S_1", "S_2", "S_3", "S_4"]
    assert np.isfinite(pred[["risk", "S_1", "S_2", "S_3", "S_4"]].to_numpy()).all()
    np.testing.assert_allclose(pred["risk"], np.concatenate(scaled, axis=1) @ result.model.coef - result.model.offset,
                               rtol=1e-5, atol=1e-6)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="l1_ratio"):
        create_model("coxnet", l1_ratio=0.0)
    with pytest.raises(ValueError, match="alpha_ratio"):
        create_model("coxnet", alpha_ratio=1.5)
