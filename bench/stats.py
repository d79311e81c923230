"""Statistics on out-of-fold prediction tables: C-indices, calibration, CIs, paired tests, ranks, KM groups.

Pure functions on pandas/numpy, no MLflow. A prediction table holds one row per (seed, fold, split,
patient) with columns `seed`, `fold`, `split` ("train" | "test"), `case_id`, `time` (months), `event`
(1 = death observed) and `risk` (higher = worse). The test rows are the outer validation fold; the train
rows are the same fold model's predictions on its training patients, which fix the censoring fit of
Uno's C and the KM risk threshold, so nothing about a test patient informs how that patient is scored.

Why these methods (the suite's statistics notes): per-fold Harrell C as the literature prints it, plus
Uno's IPCW C for heavily censored cohorts; the integrated Brier score and time-dependent AUC of the
discrete survival curves, the IBS against the training fold's Kaplan-Meier curve on the same grid (the
Brier skill score), D-calibration of each patient's S at its own time (Benjamini-Hochberg across a
table) and the observed versus predicted survival of risk groups at one horizon; a pooled out-of-fold C
whose bootstrap never compares risks of two different fold models; the Nadeau-Bengio corrected t-test
because CV training sets overlap, over folds with seeds averaged within each fold (fixed splits: seeds
add no test patients); Holm within a table; Friedman and mean ranks across cohorts; KM groups split at
each fold model's own training median. An undefined C (no events, no comparable pair), IBS or td-AUC
(no test death within the training follow-up) is NaN with a warning, never 0.5 and never a crash.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from bench.survival import c_index

TIED_TOL = 1e-8  # risk ties, as in bench.survival.c_index
N_BOOT = 1000
ALPHA = 0.05
# Uno's C horizon: the 80th percentile of the training follow-up. A fifth of the training patients are
# still under observation there, so the censoring Kaplan-Meier rests on enough of them; at the largest
# training time it is near 0 on the heavily censored cohorts and the weights 1 / G(t)^2 explode.
IPCW_TAU_QUANTILE = 0.8
ZERO_TOL = 1e-12  # per-fold differences that agree to this are equal (C-indices are ratios of pair counts)


def _surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return Surv.from_arrays(event=np.asarray(event, dtype=bool), time=np.asarray(time, dtype=float))


def _split(pred: pd.DataFrame, split: str) -> pd.DataFrame:
    return pred[pred["split"] == split]


def ipcw_tau(train_time, quantile: float = IPCW_TAU_QUANTILE) -> float:
    """Horizon of Uno's C: the given quantile (default 80th percentile) of the training follow-up times."""
    return float(np.quantile(np.asarray(train_time, dtype=float), quantile))


def ipcw_c_index(train_time, train_event, test_time, test_event, risk, tau: float | None = None) -> float:
    """Uno's IPCW C with the censoring distribution fitted on the fold's training rows, truncated at tau.

    tau defaults to `ipcw_tau(train_time)`: only pairs whose earlier member died before tau count, so
    no weight uses the censoring survival beyond it. NaN with a warning when no test event falls before tau.
    """
    train_time = np.asarray(train_time, dtype=float)
    test_time = np.asarray(test_time, dtype=float)
    test_event = np.asarray(test_event, dtype=bool)
    tau = ipcw_tau(train_time) if tau is None else float(tau)
    if not (test_event & (test_time < tau)).any():
        warnings.warn(f"IPCW C-index undefined: no test event before tau = {tau:.4g}; returning NaN", stacklevel=2)
        return float("nan")
    try:
        return float(concordance_index_ipcw(_surv(train_time, train_event), _surv(test_time, test_event),
                                            np.asarray(risk, dtype=float), tau=tau, tied_tol=TIED_TOL)[0])
    except ValueError as err:  # no comparable pair, or a zero censoring survival
        warnings.warn(f"IPCW C-index undefined ({err}); returning NaN", stacklevel=2)
        return float("nan")


def _curve_at_edges(train_time, test_time, test_event, surv, edges):
    """The points of the discrete curves that sksurv can score: (times, S at those times, test times, test events).

    S_k (column k-1 of `surv`) is the survival past bin k, i.e. P(T >= edges[k]). Kept: the inner cut points
    edges[k] (k = 1..n_bins-1) inside the test follow-up [min, max) and below the largest training time, where
    the training censoring Kaplan-Meier is known. The outer edge lies past every training time by construction
    (bench.survival.fit_bin_edges widens it over the patients it cuts, the training fold included), so it never
    qualifies; leaving it out by index keeps the grid exact when the edges come back rounded (the runs'
    `bin_edges` param has 4 decimals). Test times beyond the largest training time are censored there: no Brier
    or AUC term at an earlier time changes, and sksurv needs no censoring survival past the training range.
    """
    edges = np.asarray(edges, dtype=float)
    surv = np.asarray(surv, dtype=float)
    train_max = float(np.max(train_time))
    test_time = np.asarray(test_time, dtype=float)
    clipped = np.minimum(test_time, train_max)
    event = np.asarray(test_event, dtype=bool) & (test_time == clipped)
    times = edges[1:surv.shape[1]]
    keep = (times >= clipped.min()) & (times < clipped.max()) & (times < train_max)
    return times[keep], surv[:, :times.size][:, keep], clipped, event


def _no_scorable_death(event: np.ndarray, what: str) -> bool:
    """True, with a warning, when no test death falls within the training follow-up (NaN, never a crash)."""
    if event.any():
        return False
    warnings.warn(f"{what} undefined: no test death within the training follow-up (none, or every one past the "
                  "largest training time); returning NaN", stacklevel=3)
    return True


def integrated_brier(train_time, train_event, test_time, test_event, surv, edges) -> float:
    """Integrated Brier score (sksurv) of the discrete survival curves over the scorable bin edges.

    Censoring weights come from the training rows only; the times are those of `_curve_at_edges`
    and the integral is the trapezoid over them divided by their span (lower is better; a constant
    0.5 scores 0.25). NaN with a warning when fewer than two edges are scorable or no test death can be
    scored.
    """
    times, s_at, clipped, event = _curve_at_edges(train_time, test_time, test_event, surv, edges)
    if _no_scorable_death(event, "integrated Brier score"):
        return float("nan")
    if times.size < 2:
        warnings.warn(f"integrated Brier score undefined: {times.size} bin edge(s) inside the test follow-up; "
                      "returning NaN", stacklevel=2)
        return float("nan")
    return float(integrated_brier_score(_surv(train_time, train_event), _surv(clipped, event), s_at, times))


def km_at(train_time, train_event, times) -> np.ndarray:
    """The training Kaplan-Meier S(t) = P(T > t) (a right-continuous step) at `times`; 1 before the first death."""
    t, s = kaplan_meier_estimator(np.asarray(train_event, dtype=bool), np.asarray(train_time, dtype=float))
    idx = np.searchsorted(t, np.asarray(times, dtype=float), side="right") - 1
    return np.where(idx >= 0, s[np.clip(idx, 0, None)], 1.0)


def integrated_brier_km(train_time, train_event, test_time, test_event, edges) -> float:
    """The reference IBS: the training fold's Kaplan-Meier curve as every test patient's prediction.

    It knows nothing about the patient. Scored by `integrated_brier` on the very grid the model's curves
    are scored on (the same edges, test and training rows), so 1 - IBS / IBS_KM compares like with like.
    """
    edges = np.asarray(edges, dtype=float)
    km = np.tile(km_at(train_time, train_event, edges[1:]), (len(np.asarray(test_time)), 1))
    return integrated_brier(train_time, train_event, test_time, test_event, km, edges)


def brier_skill(ibs: float, ibs_km: float) -> float:
    """1 - IBS / IBS_KM: positive when the model beats the population curve, 0 when it equals it; NaN if undefined."""
    if not (np.isfinite(ibs) and np.isfinite(ibs_km) and ibs_km > 0):
        return float("nan")
    return float(1.0 - ibs / ibs_km)


def td_auc(train_time, train_event, test_time, test_event, surv, edges) -> float:
    """Mean cumulative/dynamic AUC (sksurv) of the risk 1 - S(t) at the scorable bin edges.

    The same times as `integrated_brier`, less those before the first test death (no case, so no AUC);
    sksurv weights the AUC(t) by the test Kaplan-Meier's drop. NaN with a warning when none remains.
    """
    times, s_at, clipped, event = _curve_at_edges(train_time, test_time, test_event, surv, edges)
    if _no_scorable_death(event, "time-dependent AUC"):
        return float("nan")
    has_case = np.array([(event & (clipped <= t)).any() for t in times], dtype=bool)
    if not has_case.any():
        warnings.warn("time-dependent AUC undefined: no test death before any scorable bin edge; returning NaN",
                      stacklevel=2)
        return float("nan")
    return float(cumulative_dynamic_auc(_surv(train_time, train_event), _surv(clipped, event),
                                        1.0 - s_at[:, has_case], times[has_case], tied_tol=TIED_TOL)[1])


def survival_at(times, surv, edges) -> np.ndarray:
    """Each patient's S_i(t_i) from its discrete curve, linear between the bin edges.

    The curve is known at the edges only: S(edges[0]) = 1 and S(edges[k]) = S_k. A step would put the whole
    mass of a bin at one value of S, so a death anywhere in bin k would read S_{k-1} (or S_k): S(T) takes
    n_bins + 1 values and even a model drawn from itself fails D-calibration. Linear interpolation spreads
    each bin's probability evenly over the bin, the one continuous reading that agrees with the model at
    every edge and makes S(T) uniform when T is drawn from the curve. Before edges[0], S = 1; from the outer
    edge on, S = S_k (the model says nothing past it; only a test patient who outlived the patients the bins
    were cut on gets there).
    """
    t = np.asarray(times, dtype=float)
    s = np.c_[np.ones(len(t)), np.asarray(surv, dtype=float)]
    e = np.asarray(edges, dtype=float)[:s.shape[1]]
    k = np.clip(np.searchsorted(e, t, side="right"), 1, e.size - 1)  # t in [e[k-1], e[k])
    frac = np.clip((t - e[k - 1]) / (e[k] - e[k - 1]), 0.0, 1.0)
    rows = np.arange(len(t))
    return s[rows, k - 1] + frac * (s[rows, k] - s[rows, k - 1])


DCAL_BINS = 10


@dataclass(frozen=True)
class DCalibration:
    """D-calibration: counts per equal bin of S(t) on [0, 1] (the lowest first), chi-square, p, patients."""

    counts: np.ndarray
    chi2: float
    p: float
    n: int


def d_calibration(s_at_time, event, n_bins: int = DCAL_BINS) -> DCalibration:
    """D-calibration (Haider, Hoehn, Davis, Greiner, JMLR 2020): S_i(t_i) is uniform on [0, 1] if the curves are right.

    A death adds 1 to the bin holding c = S_i(t_i). A censored patient only survived past t_i, so S_i(T_i) is
    uniform on [0, c] and is spread as the paper does: 1 - b_low / c to its own bin [b_low, b_high) and
    (b_high - b_low) / c to each bin wholly below c (a patient with c = 0 adds 1 to the lowest bin). Pearson's
    chi-square against n / n_bins per bin, n_bins - 1 df. NaN with a warning without patients.
    """
    c = np.clip(np.asarray(s_at_time, dtype=float), 0.0, 1.0)
    event = np.asarray(event, dtype=bool)
    n = c.size
    if n == 0:
        warnings.warn("D-calibration undefined: no patients; returning NaN", stacklevel=2)
        return DCalibration(np.zeros(n_bins), float("nan"), float("nan"), 0)
    own = np.minimum((c * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(own[event], minlength=n_bins).astype(float)
    cc, ci = c[~event], own[~event]
    width = 1.0 / n_bins
    safe = np.where(cc > 0, cc, 1.0)
    below = (np.arange(n_bins)[None, :] < ci[:, None]) * (width / safe)[:, None]
    mine = np.where(cc > 0, 1.0 - ci * width / safe, 1.0)
    counts += below[cc > 0].sum(axis=0) + np.bincount(ci, weights=mine, minlength=n_bins)
    expected = n / n_bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    return DCalibration(counts, chi2, float(sps.chi2.sf(chi2, n_bins - 1)), n)


def fold_calibration(train_time, train_event, test_time, test_event, surv, edges) -> dict[str, float]:
    """Every calibration number of one fold model from its curves and bin edges (the job logs them, the report
    recomputes them from predictions.csv and the `bin_edges` param, so older runs get them too)."""
    args = (train_time, train_event, test_time, test_event)
    ibs, ibs_km = integrated_brier(*args, surv, edges), integrated_brier_km(*args, edges)
    dcal = d_calibration(survival_at(test_time, surv, edges), test_event)
    return {"ibs": ibs, "ibs_km": ibs_km, "brier_skill": brier_skill(ibs, ibs_km), "td_auc": td_auc(*args, surv, edges),
            "dcal_chi2": dcal.chi2, "dcal_p": dcal.p}


def follow_up_horizon(train_time) -> float:
    """The calibration horizon t*: the median follow-up (observed time, dead or censored) of the training fold."""
    return float(np.median(np.asarray(train_time, dtype=float)))


def horizon_groups(predicted, time, event, horizon: float, n_groups: int) -> pd.DataFrame:
    """Patients grouped by predicted S(t*) (equal-sized groups, lowest survival first): per group n, deaths, the mean
    prediction and the Kaplan-Meier estimate at t* with its 95% log-log interval.

    Past a group's last time the KM holds its last value; a group with nobody at risk at t* says so in `at_risk`.
    """
    predicted = np.asarray(predicted, dtype=float)
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=bool)
    n_groups = min(n_groups, predicted.size)
    order = pd.Series(predicted).rank(method="first").to_numpy()
    group = np.minimum(((order - 1) * n_groups / predicted.size).astype(int), n_groups - 1)
    rows = []
    for g in range(n_groups):
        m = group == g
        km = km_curve(time[m], event[m])
        i = np.searchsorted(km.time, horizon, side="right") - 1
        pick = (lambda v: float(v[i]) if i >= 0 else 1.0)
        rows.append({"group": g + 1, "n": int(m.sum()), "deaths": int(event[m].sum()),
                     "at_risk": int(at_risk(time[m], [horizon])[0]), "predicted": float(predicted[m].mean()),
                     "observed": pick(km.survival), "observed_low": pick(km.low), "observed_high": pick(km.high)})
    return pd.DataFrame(rows)


def fold_scores(pred: pd.DataFrame) -> pd.DataFrame:
    """One row per (seed, fold): Harrell C and Uno C on the test rows, the train/test sizes and test events.

    The test events are what a fold's C rests on: with one or two, the fold's C is mostly noise.
    """
    rows = []
    for (seed, fold), part in pred.groupby(["seed", "fold"], sort=True):
        train, test = _split(part, "train"), _split(part, "test")
        rows.append({
            "seed": seed, "fold": fold, "n_train": len(train), "n_test": len(test),
            "n_events_test": int(test["event"].astype(bool).sum()),
            "c_index": c_index(test["time"], test["event"], test["risk"]),
            "c_index_ipcw": ipcw_c_index(train["time"], train["event"], test["time"], test["event"], test["risk"]),
        })
    return pd.DataFrame(rows, columns=["seed", "fold", "n_train", "n_test", "n_events_test", "c_index", "c_index_ipcw"])


def mean_std(values) -> tuple[float, float]:
    """Mean and population std (ddof=0) over the finite values; undefined folds are left out."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=0))


def pair_matrices(time, event, risk) -> tuple[np.ndarray, np.ndarray]:
    """Harrell's pair counts as matrices: (concordance score, comparable) for every ordered pair (i, j).

    Comparable: i had the event and j outlived i, or j was censored at i's event time (sksurv's
    rule). Score 1 when risk_i > risk_j, 0.5 for a risk tie; sum(score) / sum(comparable) = C.
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=bool)
    r = np.asarray(risk, dtype=float)
    later = t[None, :] > t[:, None]
    tie_censored = (t[None, :] == t[:, None]) & ~e[None, :]
    comparable = e[:, None] & (later | tie_censored)
    diff = r[:, None] - r[None, :]
    score = np.where(np.abs(diff) <= TIED_TOL, 0.5, (diff > 0).astype(float))
    return np.where(comparable, score, 0.0), comparable.astype(float)


@functools.lru_cache(maxsize=64)
def fold_draws(n: int, fold: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """How often each of a fold's n patients (sorted by case_id) appears in each bootstrap resample.

    Seeded by (seed, fold) alone, so every model scored on the same fold gets the same resamples:
    that is what makes the model-vs-model bootstrap paired. Cached and read-only, as every model
    of a cohort asks for the same draws.
    """
    rng = np.random.default_rng([seed, int(fold)])
    picks = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    counts = np.bincount(picks.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)
    counts.flags.writeable = False
    return counts


@dataclass(frozen=True)
class PooledC:
    """Pooled out-of-fold C with a percentile bootstrap CI.

    `draws` keeps the replicates and `resampling` says which patients were resampled how (test ids
    per fold, n_boot, seed), so two models' draws can be paired only when they match.
    """

    estimate: float
    ci_low: float
    ci_high: float
    draws: np.ndarray
    resampling: tuple


def _test_ids(pred: pd.DataFrame) -> dict:
    test = _split(pred, "test")
    return {fold: tuple(sorted(part["case_id"].unique())) for fold, part in test.groupby("fold", sort=True)}


def pooled_c_index(pred: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> PooledC:
    """Pooled C over all test folds: concordant and comparable pair counts are summed within folds.

    Pairs never cross folds, so two fold models' risk scales never meet. The patient bootstrap is
    stratified by fold (each fold resampled to its own size) and vectorised: a resample's pair sum is
    w' A w with w the patients' multiplicities. With several training seeds, each seed's pooled C uses
    the same patient resample and the seeds are averaged.
    """
    test = _split(pred, "test")
    seeds = sorted(test["seed"].unique())
    num = np.zeros((len(seeds), n_boot))
    den = np.zeros((len(seeds), n_boot))
    num_hat = np.zeros(len(seeds))
    den_hat = np.zeros(len(seeds))
    ids = _test_ids(pred)
    resampling = (tuple(ids.items()), n_boot, seed)
    for (fold, sd), part in test.groupby(["fold", "seed"], sort=True):
        part = part.sort_values("case_id")
        if tuple(part["case_id"]) != ids[fold]:
            raise ValueError(f"fold {fold}: seed {sd} was scored on different test patients than other seeds")
        w = fold_draws(len(part), fold, n_boot, seed)
        row = seeds.index(sd)
        score, comparable = pair_matrices(part["time"], part["event"], part["risk"])
        num[row] += ((w @ score) * w).sum(axis=1)
        den[row] += ((w @ comparable) * w).sum(axis=1)
        num_hat[row] += score.sum()
        den_hat[row] += comparable.sum()
    if not (den_hat > 0).all():
        warnings.warn("pooled C-index undefined: no comparable pair in any fold; returning NaN", stacklevel=2)
        nan = float("nan")
        return PooledC(nan, nan, nan, np.full(n_boot, nan), resampling)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = (num / den).mean(axis=0)
    estimate = float((num_hat / den_hat).mean())
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return PooledC(estimate, float(low), float(high), draws, resampling)


@dataclass(frozen=True)
class PairedBootstrap:
    """Difference in pooled C (a - b) on the same patient resamples: estimate, 95% CI, two-sided p."""

    diff: float
    ci_low: float
    ci_high: float
    p: float


def paired_bootstrap(a: PooledC, b: PooledC) -> PairedBootstrap:
    """Paired patient bootstrap of C_a - C_b from two `pooled_c_index` results on the same resamples.

    p = 2 * min(share of replicates <= 0, share >= 0), each with the +1 correction so p > 0.
    """
    if a.resampling != b.resampling:
        raise ValueError("paired bootstrap needs both models scored on the same test patients in every fold, "
                         "with the same n_boot and seed")
    d = a.draws - b.draws
    d = d[np.isfinite(d)]
    if d.size == 0:
        nan = float("nan")
        return PairedBootstrap(a.estimate - b.estimate, nan, nan, nan)
    low, high = np.percentile(d, [2.5, 97.5])
    below = (1 + np.sum(d <= 0)) / (d.size + 1)
    above = (1 + np.sum(d >= 0)) / (d.size + 1)
    return PairedBootstrap(a.estimate - b.estimate, float(low), float(high), float(min(1.0, 2 * min(below, above))))


@dataclass(frozen=True)
class CorrectedT:
    """Nadeau-Bengio corrected t-test: statistic, two-sided p, degrees of freedom, and why p is NaN."""

    t: float
    p: float
    df: float
    reason: str = ""


def corrected_ttest(diffs, test_train_ratio: float) -> CorrectedT:
    """Nadeau-Bengio corrected resampled t-test on paired per-fold differences.

    t = mean(d) / sqrt(var(d, ddof=1) * (1/J + n_test/n_train)) with J = finite differences, J-1 df,
    two-sided p. A zero-variance difference (all within ZERO_TOL) gives p = 1 when its mean is 0 and is
    undefined otherwise (the t statistic has no finite value), never p = 0. Undefined: NaN and a reason.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    j = d.size
    if j < 2:
        reason = f"corrected t-test needs >= 2 paired fold differences, got {j}"
        warnings.warn(f"{reason}; returning NaN", stacklevel=2)
        return CorrectedT(float("nan"), float("nan"), float("nan"), reason)
    mean = float(d.mean())
    if np.ptp(d) <= ZERO_TOL:
        if abs(mean) <= ZERO_TOL:
            return CorrectedT(0.0, 1.0, float(j - 1))
        reason = f"zero-variance difference with mean {mean:.4g}: t undefined"
        warnings.warn(f"{reason}; returning NaN", stacklevel=2)
        return CorrectedT(float("nan"), float("nan"), float(j - 1), reason)
    t = mean / np.sqrt(float(d.var(ddof=1)) * (1.0 / j + test_train_ratio))
    return CorrectedT(float(t), float(2.0 * sps.t.sf(abs(t), j - 1)), float(j - 1))


@dataclass(frozen=True)
class FoldDiffs:
    """Per-fold differences a - b of the seed-averaged metric, the mean n_test/n_train, and seeds per fold."""

    diffs: np.ndarray
    ratio: float
    n_seeds: int


def paired_fold_diffs(scores_a: pd.DataFrame, scores_b: pd.DataFrame, metric: str = "c_index") -> FoldDiffs:
    """Pair two `fold_scores` tables by (seed, fold), average each model over seeds within a fold, difference.

    The splits are fixed, so extra seeds add no test patients: the tests get one difference per fold
    (J = folds), not one per (fold, seed). `n_seeds` is the fewest paired seeds of any fold.
    """
    both = scores_a.merge(scores_b, on=["seed", "fold"], suffixes=("_a", "_b"), validate="one_to_one")
    per_fold = both.groupby("fold", sort=True).agg(
        a=(f"{metric}_a", "mean"), b=(f"{metric}_b", "mean"), n_test=("n_test_a", "first"),
        n_train=("n_train_a", "first"), n_seeds=("seed", "nunique"))
    ratio = float((per_fold["n_test"] / per_fold["n_train"]).mean())
    n_seeds = int(per_fold["n_seeds"].min()) if len(per_fold) else 0
    return FoldDiffs((per_fold["a"] - per_fold["b"]).to_numpy(dtype=float), ratio, n_seeds)


def wilcoxon_p(diffs) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p on per-fold differences, descriptive only; (NaN, reason) if undefined.

    With 5 folds its smallest exact two-sided p is 2/32 = 0.0625, so it can never reject at 0.05.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan"), f"Wilcoxon needs >= 2 paired fold differences, got {d.size}"
    if not np.any(np.abs(d) > ZERO_TOL):
        return 1.0, ""
    return float(sps.wilcoxon(d).pvalue), ""


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values over every comparison attempted.

    m counts every entry, NaN ones too: an undefined test is still a comparison that was made, and
    leaving it out of m would make the others easier to reject. NaN entries stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = p.size
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(ok.size)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate) over every test attempted.

    As `holm`: m counts NaN entries too, which stay NaN. q_(i) = min over j >= i of m p_(j) / j, at most 1.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p.size * p[order] / np.arange(1, ok.size + 1)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


def mean_ranks(scores: pd.DataFrame) -> pd.Series:
    """Mean rank per model (columns) over cohorts (rows), higher score = rank 1, ties share the mean.

    Cohorts missing any model's score are left out, as the Friedman test needs complete blocks.
    """
    complete = scores.dropna(axis=0, how="any")
    return complete.rank(axis=1, ascending=False, method="average").mean(axis=0)


def friedman(scores: pd.DataFrame) -> tuple[float, float, str]:
    """Friedman chi-square over complete cohorts (rows) and models (columns): (stat, p, reason)."""
    complete = scores.dropna(axis=0, how="any")
    k, n = complete.shape[1], complete.shape[0]
    if k < 3 or n < 2:
        return float("nan"), float("nan"), f"Friedman needs >= 3 models and >= 2 cohorts, got {k} and {n}"
    res = sps.friedmanchisquare(*(complete[c].to_numpy(dtype=float) for c in complete.columns))
    return float(res.statistic), float(res.pvalue), ""


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of mean ranks for k models over n cohorts (Demsar 2006)."""
    q = sps.studentized_range.ppf(1.0 - alpha, k, np.inf) / np.sqrt(2.0)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


def risk_groups(pred: pd.DataFrame) -> pd.DataFrame:
    """Test rows of the first seed labelled high/low risk by their own fold model's training median.

    high = test risk > median of that fold's training risks. Labels are pooled over folds; only the
    smallest seed is used so each patient appears once in the KM curves and the log-rank test.
    """
    first = pred[pred["seed"] == pred["seed"].min()]
    parts = []
    for _, part in first.groupby("fold", sort=True):
        threshold = float(np.median(_split(part, "train")["risk"]))
        test = _split(part, "test").copy()
        test["threshold"] = threshold
        test["high"] = test["risk"].to_numpy(dtype=float) > threshold
        parts.append(test)
    return pd.concat(parts, ignore_index=True)


def logrank(time, event, high) -> tuple[float, float]:
    """Two-group log-rank (sksurv.compare_survival): (chi-square, p); NaN with a warning if a group is empty."""
    high = np.asarray(high, dtype=bool)
    if high.all() or not high.any():
        warnings.warn("log-rank undefined: all patients fall in one risk group; returning NaN", stacklevel=2)
        return float("nan"), float("nan")
    chisq, p = compare_survival(_surv(time, event), high.astype(int))
    return float(chisq), float(p)


@dataclass(frozen=True)
class KMCurve:
    """Kaplan-Meier step function (right-continuous) with pointwise log-log 95% bands."""

    time: np.ndarray
    survival: np.ndarray
    low: np.ndarray
    high: np.ndarray


def km_curve(time, event) -> KMCurve:
    """Kaplan-Meier estimate with a 95% log-log band (sksurv.kaplan_meier_estimator)."""
    t, s, ci = kaplan_meier_estimator(np.asarray(event, dtype=bool), np.asarray(time, dtype=float),
                                      conf_level=0.95, conf_type="log-log")
    return KMCurve(t, s, ci[0], ci[1])


def at_risk(time, at) -> np.ndarray:
    """Number of patients still at risk (time >= t) at each time in `at`."""
    t = np.asarray(time, dtype=float)
    return (t[None, :] >= np.asarray(at, dtype=float)[:, None]).sum(axis=1)
