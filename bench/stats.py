"""Statistics on out-of-fold prediction tables: C-indices, calibration, CIs, paired tests, ranks, KM groups.

Pure functions on pandas/numpy, no MLflow. A prediction table holds one row per (seed, fold, split,
patient) with columns `seed`, `fold`, `split` ("train" | "test"), `case_id`, `time` (months), `event`
(1 = death observed) and `risk` (higher = worse). The test rows are the outer validation fold; the train
rows are the same fold model's predictions on its training patients, which fix the censoring fit of
Uno's C and the KM risk threshold, so nothing about a test patient informs how that patient is scored.

Why these methods (the suite's statistics notes): per-fold Harrell C as the literature prints it, plus
Uno's IPCW C for heavily censored cohorts; the integrated Brier score and time-dependent AUC of the
discrete survival curves; a pooled out-of-fold C whose bootstrap never compares risks of two different
fold models; the Nadeau-Bengio corrected t-test because CV training sets overlap, over folds with seeds
averaged within each fold (fixed splits: seeds add no test patients); Holm within a table; Friedman
and mean ranks across cohorts; KM groups split at each fold model's own training median. An undefined
C (no events, no comparable pair) is NaN with a warning, never 0.5.
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


def _curve_at_edges(train_time, test_time, surv, edges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points of the discrete curves that sksurv can score: (times, S at those times, test times).

    S_k (column k-1 of `surv`) is the survival past bin k, i.e. P(T >= edges[k]). Kept: the edges[k]
    (k = 1..n_bins) inside the test follow-up [min, max) and below the largest training time, where
    the training censoring Kaplan-Meier is known. The outer edge (just above the largest time) never
    qualifies, so in practice these are the inner cut points. Test times beyond the largest training
    time are censored there: no Brier or AUC term at an earlier time changes, and sksurv needs no
    censoring survival past the training range.
    """
    edges = np.asarray(edges, dtype=float)
    surv = np.asarray(surv, dtype=float)
    train_max = float(np.max(train_time))
    test_time = np.asarray(test_time, dtype=float)
    clipped = np.minimum(test_time, train_max)
    times = edges[1:surv.shape[1] + 1]
    keep = (times >= clipped.min()) & (times < clipped.max()) & (times < train_max)
    return times[keep], surv[:, keep], clipped


def integrated_brier(train_time, train_event, test_time, test_event, surv, edges) -> float:
    """Integrated Brier score (sksurv) of the discrete survival curves over the scorable bin edges.

    Censoring weights come from the training rows only; the times are those of `_curve_at_edges`
    and the integral is the trapezoid over them divided by their span (lower is better; a constant
    0.5 scores 0.25). NaN with a warning when fewer than two edges are scorable.
    """
    times, s_at, clipped = _curve_at_edges(train_time, test_time, surv, edges)
    if times.size < 2:
        warnings.warn(f"integrated Brier score undefined: {times.size} bin edge(s) inside the test follow-up; "
                      "returning NaN", stacklevel=2)
        return float("nan")
    event = np.asarray(test_event, dtype=bool) & (np.asarray(test_time, dtype=float) == clipped)
    return float(integrated_brier_score(_surv(train_time, train_event), _surv(clipped, event), s_at, times))


def td_auc(train_time, train_event, test_time, test_event, surv, edges) -> float:
    """Mean cumulative/dynamic AUC (sksurv) of the risk 1 - S(t) at the scorable bin edges.

    The same times as `integrated_brier`, less those before the first test death (no case, so no AUC);
    sksurv weights the AUC(t) by the test Kaplan-Meier's drop. NaN with a warning when none remains.
    """
    times, s_at, clipped = _curve_at_edges(train_time, test_time, surv, edges)
    event = np.asarray(test_event, dtype=bool) & (np.asarray(test_time, dtype=float) == clipped)
    has_case = np.array([(event & (clipped <= t)).any() for t in times], dtype=bool)
    if not has_case.any():
        warnings.warn("time-dependent AUC undefined: no test death before any scorable bin edge; returning NaN",
                      stacklevel=2)
        return float("nan")
    return float(cumulative_dynamic_auc(_surv(train_time, train_event), _surv(clipped, event),
                                        1.0 - s_at[:, has_case], times[has_case], tied_tol=TIED_TOL)[1])


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
