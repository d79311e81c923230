"""bench.stats against hand-worked examples and against sksurv/scipy called directly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from bench import stats
from bench.survival import c_index


def predictions(n_test: int, folds: int = 5, strength: float = 1.0, seed: int = 0, train_factor: int = 4,
                fold_shift: float = 0.0) -> pd.DataFrame:
    """A prediction table with a known signal: risk = strength * z + noise, hazard grows with z."""
    rng = np.random.default_rng(seed)
    parts = []
    for fold in range(folds):
        for split, m in (("train", train_factor * n_test), ("test", n_test)):
            z = rng.normal(size=m)
            t = rng.exponential(20.0 * np.exp(-z))
            cens = rng.uniform(0, 60, size=m)
            parts.append(pd.DataFrame({
                "seed": 1, "fold": fold, "split": split, "case_id": [f"P{fold}-{split}-{i:04d}" for i in range(m)],
                "time": np.minimum(t, cens), "event": (t <= cens).astype(int),
                "risk": strength * z + rng.normal(size=m) + fold * fold_shift}))
    return pd.concat(parts, ignore_index=True)


def test_corrected_ttest_matches_hand_worked_example():
    d = [0.02, 0.04, 0.01, 0.03, 0.05]          # 5 folds, one seed: J = 5
    # mean = 0.15 / 5 = 0.03; deviations -0.01, 0.01, -0.02, 0, 0.02; sum of squares = 0.001
    # sample variance = 0.001 / 4 = 2.5e-4; n_test/n_train = 1/4 (5-fold CV)
    # corrected variance = 2.5e-4 * (1/5 + 1/4) = 1.125e-4; se = sqrt(1.125e-4) = 0.0106066
    # t = 0.03 / 0.0106066 = 2.828427 = 2 * sqrt(2)
    res = stats.corrected_ttest(d, 0.25)
    t, p = res.t, res.p
    assert t == pytest.approx(2 * math.sqrt(2), rel=1e-9) and res.df == 4 and res.reason == ""
    # t with 4 df has the closed-form CDF F(t) = 1/2 + (3/8) u (1 - t^2 / (12 (1 + t^2/4))), u = t / sqrt(1 + t^2/4)
    # t^2 = 8: 1 + 8/4 = 3, u = 2.828427 / 1.732051 = 1.632993, 1 - 8/36 = 0.777778
    # F = 0.5 + 0.375 * 1.632993 * 0.777778 = 0.976290; p = 2 * (1 - F) = 0.047421
    u = 2 * math.sqrt(2) / math.sqrt(3)
    assert p == pytest.approx(2 * (1 - (0.5 + 0.375 * u * (1 - 8 / 36))), rel=1e-9)
    assert p == pytest.approx(0.047421, abs=1e-6)
    # the naive paired t (t = 0.03 / sqrt(2.5e-4 / 5) = 4.2426) overstates significance
    assert sps.ttest_1samp(d, 0.0).pvalue < p / 3


def test_corrected_ttest_needs_two_finite_differences():
    with pytest.warns(UserWarning, match="needs >= 2"):
        res = stats.corrected_ttest([0.1, np.nan], 0.25)
    assert math.isnan(res.t) and math.isnan(res.p) and "got 1" in res.reason


def test_zero_variance_difference_is_p_one_or_undefined_never_zero():
    same = stats.corrected_ttest([0.0] * 5, 0.25)
    assert (same.t, same.p, same.df, same.reason) == (0.0, 1.0, 4.0, "")
    # 0.7 - 0.65 and 0.75 - 0.7 differ in the last bit: still a zero-variance difference, not t = 1e15
    a, b = np.array([0.65, 0.7, 0.75, 0.8, 0.85]), np.array([0.6, 0.65, 0.7, 0.75, 0.8])
    assert np.ptp(a - b) > 0
    with pytest.warns(UserWarning, match="zero-variance"):
        shifted = stats.corrected_ttest(a - b, 0.25)
    assert math.isnan(shifted.p) and math.isnan(shifted.t) and shifted.df == 4
    assert "zero-variance difference with mean 0.05" in shifted.reason
    assert stats.wilcoxon_p(np.zeros(5)) == (1.0, "")


def test_holm_matches_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max keeps 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # a NaN still counts towards m = 3 (it was a comparison made): 0.01*3 = 0.03, 0.04*2 = 0.08; NaN stays NaN
    np.testing.assert_allclose(stats.holm([0.01, np.nan, 0.04]), [0.03, np.nan, 0.08])
    np.testing.assert_allclose(stats.holm([np.nan, np.nan]), [np.nan, np.nan])
    np.testing.assert_allclose(stats.holm([0.6, 0.7]), [1.0, 1.0])


def test_friedman_and_mean_ranks_match_hand_example():
    scores = pd.DataFrame({"A": [0.70, 0.65, 0.60, 0.80], "B": [0.60, 0.66, 0.60, 0.70], "C": [0.50, 0.55, 0.62, 0.75]},
                          index=["c1", "c2", "c3", "c4"])
    # ranks (1 = best): c1 A1 B2 C3; c2 B1 A2 C3; c3 C1 A2.5 B2.5; c4 A1 C2 B3
    ranks = stats.mean_ranks(scores)
    assert ranks.to_dict() == pytest.approx({"A": 1.625, "B": 2.125, "C": 2.25})
    # chi2 = 12 N / (k (k+1)) * sum R^2 - 3 N (k+1) = 4 * 12.21875 - 48 = 0.875;
    # tie correction 1 - sum(t^3 - t) / (N k (k^2 - 1)) = 1 - 6 / 96 = 0.9375; chi2 = 0.875 / 0.9375
    stat, p, reason = stats.friedman(scores)
    assert reason == ""
    assert stat == pytest.approx(0.875 / 0.9375)
    assert p == pytest.approx(math.exp(-stat / 2))  # chi-square with 2 df: sf(x) = exp(-x/2)
    # a cohort lacking one model is left out of both
    with_gap = pd.concat([scores, pd.DataFrame({"A": [0.9], "B": [np.nan], "C": [0.1]}, index=["c5"])])
    assert stats.mean_ranks(with_gap).to_dict() == pytest.approx(ranks.to_dict())
    assert math.isnan(stats.friedman(scores[["A", "B"]])[1])


def test_nemenyi_cd_matches_demsar_table():
    # Demsar (2006) table 5(a): q_0.05 = 2.728 for k = 5; CD = q * sqrt(k (k+1) / (6 N)) = 2.728 for N = 5
    assert stats.nemenyi_cd(5, 5) == pytest.approx(2.728, abs=1e-3)
    assert stats.nemenyi_cd(3, 10) == pytest.approx(2.343 * math.sqrt(12 / 60), abs=1e-3)


def test_mean_std_is_population_std_over_finite_folds():
    assert stats.mean_std([0.6, 0.7, np.nan]) == pytest.approx((0.65, 0.05))


def test_pair_matrices_reproduce_sksurv_including_tied_times(rng):
    time = rng.integers(1, 15, size=60).astype(float)       # many tied times
    event = rng.random(60) < 0.6
    risk = np.round(rng.normal(size=60), 1)                  # many tied risks
    score, comparable = stats.pair_matrices(time, event, risk)
    assert score.sum() / comparable.sum() == pytest.approx(c_index(time, event, risk), abs=1e-12)


def test_bootstrap_weights_equal_explicit_resampling():
    pred = predictions(40, folds=1)
    test = pred[pred["split"] == "test"].sort_values("case_id")
    score, comparable = stats.pair_matrices(test["time"], test["event"], test["risk"])
    w = stats.fold_draws(len(test), fold=0, n_boot=3, seed=7)
    for row in w:
        resample = test.iloc[np.repeat(np.arange(len(test)), row.astype(int))]
        assert (row @ score @ row) / (row @ comparable @ row) == pytest.approx(
            c_index(resample["time"], resample["event"], resample["risk"]), abs=1e-12)


def test_pooled_c_never_compares_patients_of_different_folds():
    pred = predictions(60)
    shifted = predictions(60, fold_shift=10.0)  # fold k's risks moved by 10 k: a different scale per fold model
    a, b = stats.pooled_c_index(pred, n_boot=200), stats.pooled_c_index(shifted, n_boot=200)
    assert a.estimate == pytest.approx(b.estimate, abs=1e-12)
    np.testing.assert_allclose(a.draws, b.draws)
    test = shifted[shifted["split"] == "test"]
    assert abs(c_index(test["time"], test["event"], test["risk"]) - b.estimate) > 0.05  # naive pooling would move
    one = pred[pred["fold"] == 0]
    t0 = one[one["split"] == "test"]
    assert stats.pooled_c_index(one, n_boot=10).estimate == pytest.approx(c_index(t0["time"], t0["event"], t0["risk"]))


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_patients():
    small = stats.pooled_c_index(predictions(20), n_boot=1000, seed=3)
    large = stats.pooled_c_index(predictions(200), n_boot=1000, seed=3)
    for res in (small, large):
        assert res.ci_low < res.estimate < res.ci_high
        assert res.draws.shape == (1000,)
    assert (large.ci_high - large.ci_low) < 0.6 * (small.ci_high - small.ci_low)
    again = stats.pooled_c_index(predictions(20), n_boot=1000, seed=3)
    np.testing.assert_array_equal(again.draws, small.draws)  # seeded


def test_pooled_c_averages_training_seeds_over_the_same_resamples():
    one = predictions(40, folds=3)
    two = one.assign(seed=2, risk=one["risk"] + np.random.default_rng(9).normal(size=len(one)))
    a, b = stats.pooled_c_index(one, n_boot=300), stats.pooled_c_index(two, n_boot=300)
    both = stats.pooled_c_index(pd.concat([one, two]), n_boot=300)
    assert both.estimate == pytest.approx((a.estimate + b.estimate) / 2)
    np.testing.assert_allclose(both.draws, (a.draws + b.draws) / 2)
    missing = pd.concat([one, two.drop(index=two.index[two["split"] == "test"][:1])])
    with pytest.raises(ValueError, match="different test patients"):
        stats.pooled_c_index(missing, n_boot=10)


def test_paired_bootstrap_detects_the_better_model_and_not_itself():
    good = predictions(80, strength=2.0)
    noise = good.assign(risk=np.random.default_rng(1).normal(size=len(good)))
    pg, pn = stats.pooled_c_index(good), stats.pooled_c_index(noise)
    res = stats.paired_bootstrap(pg, pn)
    assert res.diff == pytest.approx(pg.estimate - pn.estimate)
    assert 0 < res.ci_low < res.diff < res.ci_high
    assert res.p == pytest.approx(2 / 1001)  # no replicate <= 0: the +1-corrected floor
    same = stats.paired_bootstrap(pg, stats.pooled_c_index(good))
    assert same.diff == 0 and same.ci_low == 0 and same.ci_high == 0 and same.p == 1.0
    other_patients = stats.pooled_c_index(predictions(80).assign(case_id=lambda d: d["case_id"] + "x"))
    with pytest.raises(ValueError, match="same test patients"):
        stats.paired_bootstrap(pg, other_patients)


def test_fold_without_events_gives_nan_with_warning_not_half():
    pred = predictions(30, folds=3)
    no_events = (pred["fold"] == 1) & (pred["split"] == "test")
    pred.loc[no_events, "event"] = 0
    with pytest.warns(UserWarning, match="undefined"):
        scores = stats.fold_scores(pred)
    assert math.isnan(scores.loc[scores["fold"] == 1, "c_index"].item())
    assert math.isnan(scores.loc[scores["fold"] == 1, "c_index_ipcw"].item())
    assert scores.loc[scores["fold"] != 1, "c_index"].notna().all()
    test_events = pred[pred["split"] == "test"].groupby("fold")["event"].sum()
    assert scores.set_index("fold")["n_events_test"].tolist() == test_events.tolist()
    assert scores.loc[scores["fold"] == 1, "n_events_test"].item() == 0 < test_events.drop(1).min()
    mean, std = stats.mean_std(scores["c_index"])
    assert mean == pytest.approx(scores["c_index"].dropna().mean())
    assert np.isfinite(stats.pooled_c_index(pred, n_boot=50).estimate)  # the other folds still count


def test_ipcw_survives_test_times_beyond_the_training_range():
    pred = predictions(50, folds=1)
    train, test = pred[pred["split"] == "train"], pred[pred["split"] == "test"].copy()
    test.loc[test.index[:5], "time"] = train["time"].max() + 50.0  # follow-up longer than any training patient
    y_train = Surv.from_arrays(train["event"].astype(bool), train["time"])
    y_test = Surv.from_arrays(test["event"].astype(bool), test["time"])
    with pytest.raises(ValueError):  # what the default (no tau) would do
        concordance_index_ipcw(y_train, y_test, test["risk"].to_numpy())
    value = stats.ipcw_c_index(train["time"], train["event"], test["time"], test["event"], test["risk"])
    expected = concordance_index_ipcw(y_train, y_test, test["risk"].to_numpy(), tau=np.quantile(train["time"], 0.8))[0]
    assert value == pytest.approx(expected) and 0.5 < value < 1.0


def test_ipcw_tau_is_the_80th_percentile_of_training_follow_up_not_where_weights_explode():
    train_time = np.linspace(1.0, 100.0, 200)
    train_event = np.arange(200) % 10 == 0  # 90% censored over the whole follow-up: G(t) falls towards 0
    train_event[-1] = True
    assert stats.ipcw_tau(train_time) == pytest.approx(80.2)  # position 0.8 * 199 = 159.2 of a 99/199 grid
    assert stats.ipcw_tau(train_time) == pytest.approx(np.quantile(train_time, 0.8))
    # early deaths ranked right; one death at 98.5, where G is about 0.01, ranked below a patient who outlived it
    test_time = np.array([5.0, 10, 15, 20, 30, 40, 60, 97, 98.5, 99.5])
    test_event = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    risk = np.array([10.0, 9, 8, 7, 3, 2, 1, 0.5, -5, 5])
    value = stats.ipcw_c_index(train_time, train_event, test_time, test_event, risk)
    assert value == 1.0  # every pair whose earlier death falls before tau = 80.2 is concordant
    old = stats.ipcw_c_index(train_time, train_event, test_time, test_event, risk, tau=train_time.max())
    assert old < 0.05  # at the largest training time, the one late pair's weight 1 / G^2 outweighs all others
    with pytest.warns(UserWarning, match="no test event before tau"):
        assert math.isnan(stats.ipcw_c_index(train_time, train_event, test_time, test_event, risk, tau=4.0))


def test_paired_tests_average_seeds_within_folds_so_df_is_folds_minus_one():
    rng = np.random.default_rng(4)

    def scores(shift):
        return pd.DataFrame({"seed": np.repeat([1, 2], 5), "fold": np.tile(range(5), 2), "n_train": 160, "n_test": 40,
                             "c_index": 0.6 + shift + rng.normal(0, 0.03, 10)})

    a, b = scores(0.02), scores(0.0)
    paired = stats.paired_fold_diffs(a, b)
    assert paired.diffs.shape == (5,) and paired.n_seeds == 2 and paired.ratio == pytest.approx(0.25)
    res = stats.corrected_ttest(paired.diffs, paired.ratio)
    assert res.df == 4
    # the same test on single tables that already hold each model's seed-averaged C per fold
    avg = [t.groupby("fold", as_index=False).agg(n_train=("n_train", "first"), n_test=("n_test", "first"),
                                                 c_index=("c_index", "mean")).assign(seed=1) for t in (a, b)]
    single = stats.paired_fold_diffs(*avg)
    assert single.n_seeds == 1
    np.testing.assert_allclose(paired.diffs, single.diffs, rtol=1e-12)
    assert res.p == pytest.approx(stats.corrected_ttest(single.diffs, single.ratio).p, rel=1e-12)
    per_pair = (a["c_index"] - b["c_index"]).to_numpy()  # what counting (fold, seed) pairs as J = 10 would test
    assert stats.corrected_ttest(per_pair, 0.25).df == 9
    assert stats.wilcoxon_p(paired.diffs)[0] == pytest.approx(sps.wilcoxon(paired.diffs).pvalue)
    assert stats.wilcoxon_p(paired.diffs)[0] >= 0.0625  # 5 folds: descriptive only


def test_wilcoxon_on_fold_differences_and_undefined_below_two():
    d = [0.01, 0.03, -0.01, 0.02, 0.04]
    p, reason = stats.wilcoxon_p(d)
    assert reason == "" and p == pytest.approx(sps.wilcoxon(d).pvalue) and p >= 0.0625
    p, reason = stats.wilcoxon_p([0.02, np.nan])
    assert math.isnan(p) and "got 1" in reason


def _uncensored(n: int = 200, seed: int = 0):
    time = np.random.default_rng(seed).uniform(1.0, 100.0, n)
    return time, np.ones(n, dtype=bool), np.array([0.5, 25.0, 50.0, 75.0, 100.1])


def test_calibration_of_perfect_and_constant_curves_by_hand():
    """No censoring, so every weight is 1: Brier(t) = mean (1{T >= t} - S(t))^2, integrated by trapezoid."""
    time, event, edges = _uncensored()
    perfect = (time[:, None] >= edges[None, 1:]).astype(float)  # S_k = 1 exactly for those alive at edge k
    assert stats.integrated_brier(time, event, time, event, perfect, edges) == 0.0
    assert stats.td_auc(time, event, time, event, perfect, edges) == 1.0
    half = np.full((len(time), 4), 0.5)
    assert stats.integrated_brier(time, event, time, event, half, edges) == pytest.approx(0.25)
    assert stats.td_auc(time, event, time, event, half, edges) == pytest.approx(0.5)  # a constant cannot rank
    km = np.array([(time >= t).mean() for t in edges[1:]])  # the Kaplan-Meier without censoring
    brier = km[:3] * (1 - km[:3])  # at edges 25, 50, 75; the outer edge 100.1 is past the follow-up
    expected = ((brier[0] + brier[1]) / 2 * 25 + (brier[1] + brier[2]) / 2 * 25) / 50
    constant_km = np.tile(km, (len(time), 1))
    assert stats.integrated_brier(time, event, time, event, constant_km, edges) == pytest.approx(expected)
    assert expected < 0.25  # the KM beats the uninformed 0.5


def test_calibration_uses_training_censoring_and_only_scorable_edges(rng):
    pred = predictions(60, folds=1)
    train, test = pred[pred["split"] == "train"], pred[pred["split"] == "test"].copy()
    test.loc[test.index[:3], "time"] = train["time"].max() + 20.0  # beyond the training range: censored there
    edges = np.r_[test["time"].min() - 1.0, np.quantile(train["time"], [0.25, 0.5, 0.75]), train["time"].max() + 1e-6]
    surv = np.sort(rng.uniform(0.05, 0.95, (len(test), 4)), axis=1)[:, ::-1]
    args = (train["time"], train["event"], test["time"], test["event"], surv, edges)
    ibs, auc = stats.integrated_brier(*args), stats.td_auc(*args)
    clipped = np.minimum(test["time"], train["time"].max())
    y_train = Surv.from_arrays(train["event"].astype(bool), train["time"])
    y_test = Surv.from_arrays(test["event"].astype(bool) & (clipped == test["time"]), clipped)
    assert ibs == pytest.approx(integrated_brier_score(y_train, y_test, surv[:, :3], edges[1:4]))
    assert auc == pytest.approx(cumulative_dynamic_auc(y_train, y_test, 1 - surv[:, :3], edges[1:4])[1])
    heavier = train.assign(event=0)  # the censoring fit comes from the training rows: change them, the IBS moves
    heavier.loc[heavier.index[-1], "event"] = 1
    assert stats.integrated_brier(heavier["time"], heavier["event"], *args[2:]) != pytest.approx(ibs)
    far = np.r_[edges[:2], edges[-1] + np.array([1.0, 2.0, 3.0])]  # one edge inside the follow-up
    with pytest.warns(UserWarning, match="1 bin edge"):
        assert math.isnan(stats.integrated_brier(*args[:5], far))


def _fold(fold: int, train_risk, test_risk) -> pd.DataFrame:
    rows = [("train", r) for r in train_risk] + [("test", r) for r in test_risk]
    return pd.DataFrame({"seed": 1, "fold": fold, "split": [s for s, _ in rows],
                         "case_id": [f"f{fold}p{i}" for i in range(len(rows))],
                         "time": np.arange(1.0, len(rows) + 1), "event": 1, "risk": [r for _, r in rows]})


def test_km_threshold_comes_from_the_training_rows():
    base = pd.concat([_fold(0, np.arange(10.0), [3.0, 4.0, 5.0, 6.0]),      # train median 4.5
                      _fold(1, np.arange(100.0, 110.0), [103.0, 106.0])])  # train median 104.5
    groups = stats.risk_groups(base)
    assert groups["high"].tolist() == [False, False, True, True, False, True]
    assert groups["threshold"].tolist() == [4.5] * 4 + [104.5] * 2
    # shift every test risk of fold 0 up by 10: a test-set median would still split 2/2, the train median says all high
    shifted = base.copy()
    shifted.loc[(shifted["fold"] == 0) & (shifted["split"] == "test"), "risk"] += 10.0
    assert stats.risk_groups(shifted)["high"].tolist() == [True, True, True, True, False, True]
    # shift fold 0's training risks instead: the test risks are unchanged, yet all fall below the new threshold
    train_shift = base.copy()
    train_shift.loc[(train_shift["fold"] == 0) & (train_shift["split"] == "train"), "risk"] += 10.0
    assert stats.risk_groups(train_shift)["high"].tolist() == [False, False, False, False, False, True]


def test_km_threshold_uses_only_the_first_seed():
    one = _fold(0, np.arange(10.0), [3.0, 6.0])
    two = one.assign(seed=2, risk=-one["risk"])
    groups = stats.risk_groups(pd.concat([two, one]))
    assert groups["seed"].unique().tolist() == [1] and groups["high"].tolist() == [False, True]


def test_km_and_logrank_equal_sksurv_called_directly(rng):
    time = rng.exponential(30, size=80).round(1)
    event = rng.random(80) < 0.7
    high = rng.random(80) < 0.5
    chisq, p = stats.logrank(time, event, high)
    ref = compare_survival(Surv.from_arrays(event, time), high.astype(int))
    assert (chisq, p) == pytest.approx((ref[0], ref[1]))
    km = stats.km_curve(time, event)
    t, s, ci = kaplan_meier_estimator(event, time, conf_type="log-log")
    np.testing.assert_allclose(km.time, t)
    np.testing.assert_allclose(km.survival, s)
    np.testing.assert_allclose(np.c_[km.low, km.high].T, ci)
    assert np.all(km.low <= km.survival + 1e-12) and np.all(km.survival <= km.high + 1e-12)
    with pytest.warns(UserWarning, match="one risk group"):
        assert math.isnan(stats.logrank(time, event, np.ones(80, bool))[1])


def test_at_risk_counts_hand_example():
    assert stats.at_risk([1.0, 2.0, 2.0, 5.0, 9.0], [0.0, 2.0, 5.0, 10.0]).tolist() == [5, 4, 2, 0]


def test_km_reference_is_sksurvs_brier_score_of_the_training_km_on_the_models_grid(rng):
    pred = predictions(60, folds=1)
    train, test = pred[pred["split"] == "train"], pred[pred["split"] == "test"].copy()
    test.loc[test.index[:3], "time"] = train["time"].max() + 20.0  # censored at the largest training time
    edges = np.r_[test["time"].min() - 1.0, np.quantile(train["time"], [0.25, 0.5, 0.75]), train["time"].max() + 1e-6]
    surv = np.sort(rng.uniform(0.05, 0.95, (len(test), 4)), axis=1)[:, ::-1]
    args = (train["time"], train["event"], test["time"], test["event"])
    t_km, s_km = kaplan_meier_estimator(train["event"].astype(bool), train["time"])
    times = edges[1:4]  # the grid the model's IBS is read on (test_calibration_uses_training_censoring...)
    km = s_km[np.searchsorted(t_km, times, side="right") - 1]
    clipped = np.minimum(test["time"], train["time"].max())
    y_train = Surv.from_arrays(train["event"].astype(bool), train["time"])
    y_test = Surv.from_arrays(test["event"].astype(bool) & (clipped == test["time"]), clipped)
    expected = integrated_brier_score(y_train, y_test, np.tile(km, (len(test), 1)), times)
    assert stats.integrated_brier_km(*args, edges) == pytest.approx(expected, rel=1e-12)
    ibs = stats.integrated_brier(*args, surv, edges)
    assert stats.brier_skill(ibs, expected) == pytest.approx(1 - ibs / expected)
    assert ibs > expected  # random decreasing curves do worse than the population curve: negative skill
    # the edges as the runs' `bin_edges` param gives them back (4 decimals, the outer one may drop below the
    # largest training time): the same grid (the times move by the rounding only), the same numbers to 1e-5
    rounded = np.round(edges, 4)
    rounded[-1] = train["time"].max() - 4e-5
    assert stats.integrated_brier_km(*args, rounded) == pytest.approx(expected, rel=1e-5)
    assert stats.integrated_brier(*args, surv, rounded) == pytest.approx(ibs, rel=1e-5)
    calib = stats.fold_calibration(*args, surv, edges)
    assert calib["ibs_km"] == pytest.approx(expected) and calib["ibs"] == ibs
    assert calib["brier_skill"] == pytest.approx(1 - ibs / expected) and 0 <= calib["dcal_p"] <= 1
    assert math.isnan(stats.brier_skill(ibs, float("nan"))) and math.isnan(stats.brier_skill(0.1, 0.0))


def test_ibs_and_td_auc_are_nan_with_a_warning_without_a_scorable_test_death(rng):
    time, event, edges = _uncensored()
    surv = np.sort(rng.uniform(0.1, 0.9, (20, 4)), axis=1)[:, ::-1]
    inside = rng.uniform(1.0, 90.0, 20)
    for test_time, test_event in ((inside, np.zeros(20, bool)),                       # no death at all
                                  (np.r_[inside[:10], 150.0 + np.arange(10)], np.r_[np.zeros(10), np.ones(10)])):
        for score in (stats.integrated_brier, stats.td_auc):                          # deaths past training follow-up
            with pytest.warns(UserWarning, match="no test death within the training follow-up"):
                assert math.isnan(score(time, event, test_time, test_event, surv, edges))
        with pytest.warns(UserWarning, match="no test death"):
            calib = stats.fold_calibration(time, event, test_time, test_event, surv, edges)
        assert math.isnan(calib["ibs"]) and math.isnan(calib["ibs_km"]) and math.isnan(calib["brier_skill"])


def test_survival_at_is_linear_between_edges_one_before_them_and_flat_after():
    edges = np.array([0.0, 10.0, 20.0, 40.0])
    surv = np.array([[0.8, 0.5, 0.2], [0.9, 0.9, 0.3]])
    got = stats.survival_at([5.0, 30.0], surv, edges)
    np.testing.assert_allclose(got, [0.9, 0.6])  # halfway 1 -> 0.8; halfway 0.9 -> 0.3
    np.testing.assert_allclose(stats.survival_at([-1.0, 40.0, 99.0], np.tile(surv[0], (3, 1)), edges), [1.0, 0.2, 0.2])
    np.testing.assert_allclose(stats.survival_at([10.0, 20.0], surv, edges), [0.8, 0.9])  # the edges themselves


def test_d_calibration_counts_by_hand():
    """Deaths at S = 0.05 and 0.95; censored at c = 0.25: 1 - 0.2/0.25 = 0.2 to [0.2, 0.3), 0.1/0.25 = 0.4 to
    each of the two bins below; censored at c = 0: all of it to the lowest bin."""
    d = stats.d_calibration([0.05, 0.95, 0.25, 0.0], [1, 1, 0, 0])
    np.testing.assert_allclose(d.counts, [2.4, 0.4, 0.2, 0, 0, 0, 0, 0, 0, 1.0])
    assert d.counts.sum() == pytest.approx(4) and d.n == 4
    expected = 0.4
    assert d.chi2 == pytest.approx(((d.counts - expected) ** 2 / expected).sum())
    assert d.p == pytest.approx(sps.chisquare(d.counts).pvalue)
    with pytest.warns(UserWarning, match="no patients"):
        assert math.isnan(stats.d_calibration([], []).p)


def _drawn_from_curves(rng, n: int, edges: np.ndarray, mean_logit: float, censor_until: float | None):
    """Patients whose times are drawn from their own discrete curves (mass spread evenly within each bin, as
    `survival_at` reads them), those alive at the outer edge censored there, and, with `censor_until`,
    independently censored uniformly up to that multiple of the outer edge."""
    surv = np.cumprod(1 - 1 / (1 + np.exp(-rng.normal(mean_logit, 1.0, (n, edges.size - 1)))), axis=1)
    s = np.c_[np.ones(n), surv]
    u = rng.uniform(size=n)
    k = (s > u[:, None]).sum(axis=1)  # S drops below u in bin k (1-based); k = n_bins + 1: past the outer edge
    kk = np.minimum(k, edges.size - 1)
    rows = np.arange(n)
    frac = (s[rows, kk - 1] - u) / (s[rows, kk - 1] - s[rows, kk])
    t = np.where(k <= edges.size - 1, edges[kk - 1] + frac * (edges[kk] - edges[kk - 1]), edges[-1])
    cens = np.inf if censor_until is None else rng.uniform(edges[0], censor_until * edges[-1], n)
    event = (k <= edges.size - 1) & (t <= cens)
    return np.minimum(t, cens), event, surv


def test_d_calibration_rejects_at_its_level_for_curves_that_are_right_and_always_when_badly_scaled():
    """Curves that are right: about 1% of patients censored (alive at the outer edge), p uniform and 5% rejected;
    with 38% censored the test is conservative (a censored patient's spread-out unit varies less than a death's),
    so the table's counts under heavy censoring are lower bounds. Curves raised to the power 3: always rejected."""
    rng = np.random.default_rng(7)
    edges = np.array([0.0, 10.0, 25.0, 45.0, 80.0])
    right, censored, scaled = [], [], []
    for _ in range(400):
        time, event, surv = _drawn_from_curves(rng, 150, edges, 1.0, None)
        right.append(stats.d_calibration(stats.survival_at(time, surv, edges), event).p)
        time, event, surv = _drawn_from_curves(rng, 150, edges, -1.0, 1.5)
        censored.append(stats.d_calibration(stats.survival_at(time, surv, edges), event).p)
        if len(scaled) < 50:  # the same patients, every curve cubed: far too pessimistic
            scaled.append(stats.d_calibration(stats.survival_at(time, surv ** 3, edges), event).p)
    rate = np.mean(np.array(right) < 0.05)
    assert 0.02 <= rate <= 0.09, rate  # Monte Carlo s.e. at 5% over 400 draws: 0.011
    assert sps.kstest(right, "uniform").pvalue > 0.01  # the p-values themselves are uniform-ish
    assert np.mean(np.array(censored) < 0.05) < 0.05
    assert np.mean(np.array(scaled) < 0.05) > 0.95


def test_benjamini_hochberg_matches_hand_example_and_scipy():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 0.02, 0.02, 0.04, 0.04 after the running minimum from the top
    np.testing.assert_allclose(stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    p = np.random.default_rng(3).uniform(0, 0.2, 30)
    np.testing.assert_allclose(stats.benjamini_hochberg(p), sps.false_discovery_control(p))
    # a NaN counts in m = 3 and stays NaN: 0.01 * 3 / 1 = 0.03, 0.04 * 3 / 2 = 0.06
    np.testing.assert_allclose(stats.benjamini_hochberg([0.01, np.nan, 0.04]), [0.03, np.nan, 0.06])


def test_horizon_groups_compare_the_mean_prediction_with_each_groups_km_at_the_horizon(rng):
    time = rng.exponential(30, 80).round(1)
    event = rng.random(80) < 0.7
    predicted = rng.uniform(0.2, 0.9, 80)
    horizon = stats.follow_up_horizon(time)
    assert horizon == np.median(time)
    groups = stats.horizon_groups(predicted, time, event, horizon, 4)
    assert groups["n"].tolist() == [20] * 4 and groups["predicted"].is_monotonic_increasing
    lowest = np.argsort(predicted)[:20]
    assert groups.loc[0, "predicted"] == pytest.approx(predicted[lowest].mean())
    km = stats.km_curve(time[lowest], event[lowest])
    i = np.searchsorted(km.time, horizon, side="right") - 1
    assert (groups.loc[0, "observed"], groups.loc[0, "observed_low"], groups.loc[0, "observed_high"]) == (
        km.survival[i], km.low[i], km.high[i])
    assert groups.loc[0, "at_risk"] == (time[lowest] >= horizon).sum()
