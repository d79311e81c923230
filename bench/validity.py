"""Does the benchmark find what the synthetic scenarios put there, and nothing else? Pure statistics, no MLflow.

Three questions, each answered from prediction tables with the report's own functions (`bench.stats`):
- expected versus observed: each model's mean C over replicate data sets, with a replicate interval, against a
  rule written per scenario (`RULES`);
- false positives: how often the report's pairwise tests (corrected t, paired bootstrap, Wilcoxon; raw and
  after Holm) reject where nothing differs, under the `null` scenario (model against model) and Nadeau and
  Bengio's null (a model against itself trained with another seed);
- power: how often the corrected t-test finds a known gap (the true risk plus Gaussian noise against the true
  risk) as the events per test fold grow, from the generator's labels alone (no training).

Rates carry a Wilson interval over their Monte Carlo trials. Trials within a replicate share data (a model's
runs meet in several pairs, Holm's family is one replicate's table), so the interval is a guide, not exact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench import stats
from bench.data.synth import DEFAULT_SCENARIO, Labels, draw_labels
from bench.survival import c_index
from models import get_model_class
from models.base import OMICS, WSI

ALPHA = stats.ALPHA
LEVEL = 0.95  # replicate and Monte Carlo intervals
TESTS = {"corrected_t": "Nadeau-Bengio corrected t", "paired_bootstrap": "paired patient bootstrap",
         "wilcoxon": "Wilcoxon signed-rank"}
ORACLE = "oracle"
FLOOR_ONLY = 1e-9  # a scale so small that the deaths-per-test-fold floor alone sets a cohort's size
RULES = {
    "null": "every model's 95% replicate interval of its mean C contains 0.5",
    "shared": "every model's 95% replicate interval of its mean C lies above 0.5",
    "histology": "for each WSI-only model a and genomic-only model b, the 95% replicate interval of C_a - C_b "
                 "(paired by replicate) lies above 0",
    "genomic": "for each genomic-only model b and WSI-only model a, the 95% replicate interval of C_b - C_a "
               "(paired by replicate) lies above 0",
    "sparse": "none: descriptive (the rare informative patches are where G-HANet's training-time genomics should help)",
}


def modality(model: str) -> str:
    """What a model reads at inference: `wsi` (WSI-only, G-HANet included), `omics` (genomic-only) or `other`."""
    infer = get_model_class(model).infer_modalities
    return "wsi" if infer == {WSI} else "omics" if infer == {OMICS} else "other"


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial rate k/n; NaN when n = 0. Its bounds at k = 0 and k = n are exactly 0
    and 1 (the formula's rounding would put them a hair inside the rate)."""
    if n == 0:
        return float("nan"), float("nan")
    z = sps.norm.ppf(0.5 + level / 2)
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else float(mid - half)), (1.0 if k == n else float(mid + half))


def replicate_interval(values) -> tuple[float, float, float]:
    """Mean and t interval over replicates (each replicate one value); the interval is NaN under 2 replicates."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = sps.t.ppf(0.5 + LEVEL / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


# --------------------------------------------------------------------------- expected versus observed

def replicate_scores(preds: pd.DataFrame) -> pd.DataFrame:
    """Per (scenario, replicate, model): the mean per-fold Harrell C over cohorts, folds and seeds, and the same
    for the true risk on the same test folds (model `oracle`)."""
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny fold without a comparable pair is NaN, counted as such
        for (scenario, rep, model), part in preds.groupby(["scenario", "replicate", "model"], sort=True):
            c = [stats.fold_scores(p)["c_index"] for _, p in part.groupby("cohort", sort=True)]
            rows.append({"scenario": scenario, "replicate": rep, "model": model,
                         "mean_c": stats.mean_std(pd.concat(c))[0]})
        test = preds[preds["split"] == "test"]
        for (scenario, rep), part in test.groupby(["scenario", "replicate"], sort=True):
            first = part[(part["model"] == part["model"].min()) & (part["seed"] == part["seed"].min())]
            c = [c_index(f["time"], f["event"], f["true_risk"]) for _, f in first.groupby(["cohort", "fold"])]
            rows.append({"scenario": scenario, "replicate": rep, "model": ORACLE, "mean_c": stats.mean_std(c)[0]})
    return pd.DataFrame(rows, columns=["scenario", "replicate", "model", "mean_c"])


def _expected(scenario: str, kind: str) -> str:
    if scenario == "null":
        return "0.5"
    if scenario == "shared":
        return "> 0.5"
    if scenario in ("histology", "genomic") and kind in ("wsi", "omics"):
        carrier = "wsi" if scenario == "histology" else "omics"
        return "> the other modality's models" if kind == carrier else "< the other modality's models (about 0.5)"
    return "no rule"


def expected_vs_observed(reps: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[str, str]]]:
    """The table (scenario, model, its inference modality, replicates, mean C and interval, expected, holds) and
    per scenario its verdict (PASS, FAIL or why it cannot be judged) with the rule's detail."""
    rows, verdicts = [], {}
    for scenario, part in reps.groupby("scenario", sort=False):
        models = [m for m in sorted(part["model"].unique()) if m != ORACLE]
        wide = part.pivot(index="replicate", columns="model", values="mean_c")
        holds = {}
        if scenario in ("null", "shared"):
            for m in models:
                _, lo, hi = replicate_interval(wide[m])
                holds[m] = None if not np.isfinite(lo) else (lo <= 0.5 <= hi if scenario == "null" else lo > 0.5)
        elif scenario in ("histology", "genomic"):
            carrier = "wsi" if scenario == "histology" else "omics"
            better = [m for m in models if modality(m) == carrier]
            worse = [m for m in models if modality(m) in ("wsi", "omics") and modality(m) != carrier]
            lows = {(a, b): replicate_interval(wide[a] - wide[b])[1] for a in better for b in worse}
            for m in better + worse if lows else []:
                mine = [lo for pair, lo in lows.items() if m in pair]
                holds[m] = all(lo > 0 for lo in mine) if np.isfinite(mine).all() else None
        rule = RULES.get(scenario, "none")
        if scenario not in ("null", "shared", "histology", "genomic"):
            verdicts[scenario] = ("no rule", rule)
        elif wide.shape[0] < 2:
            verdicts[scenario] = ("not judged: needs 2 or more replicates", rule)
        elif not holds:
            verdicts[scenario] = ("not judged: needs a WSI-only and a genomic-only model", rule)
        elif None in holds.values():
            verdicts[scenario] = ("not judged: a model has fewer than 2 replicates with a score", rule)
        else:
            verdicts[scenario] = ("PASS" if all(holds.values()) else "FAIL", rule)
        for m in models + [ORACLE]:
            mean, lo, hi = replicate_interval(wide[m])
            rows.append({"scenario": scenario, "model": m, "modality": "truth" if m == ORACLE else modality(m),
                         "replicates": int(wide[m].notna().sum()), "mean_c": mean, "ci_low": lo, "ci_high": hi,
                         "expected": "the ceiling" if m == ORACLE else _expected(scenario, modality(m)),
                         "holds": holds.get(m)})
    return pd.DataFrame(rows), verdicts


# --------------------------------------------------------------------------- budget sensitivity

def budget_comparison(here: pd.DataFrame, there: pd.DataFrame) -> pd.DataFrame:
    """Per scenario and model, this budget's replicate scores against another budget's on the same data.

    Both are `replicate_scores` tables; rows pair on (scenario, replicate, model), so only the replicates both
    ran count. Gives each side's mean C, the paired difference here - there with its 95% t interval over
    replicates, and each side's rank of the model within its scenario (1 = the highest mean C; the oracle is
    left out of the ranks), which says whether a ranking moves with the budget.
    """
    key = ["scenario", "replicate", "model"]
    pairs = here[key + ["mean_c"]].merge(there[key + ["mean_c"]], on=key, suffixes=("_here", "_there"))
    if pairs.empty:
        raise ValueError("the two score tables share no (scenario, replicate, model): they are not the same study "
                         "at two budgets")
    rows = []
    for (scenario, model), g in pairs.groupby(["scenario", "model"], sort=True):
        diff, low, high = replicate_interval(g["mean_c_here"] - g["mean_c_there"])
        rows.append({"scenario": scenario, "model": model, "replicates": len(g),
                     "mean_c_here": g["mean_c_here"].mean(), "mean_c_there": g["mean_c_there"].mean(),
                     "difference": diff, "diff_low": low, "diff_high": high})
    table = pd.DataFrame(rows)
    ranked = table["model"] != ORACLE
    for side in ("here", "there"):
        table[f"rank_{side}"] = (table[ranked].groupby("scenario")[f"mean_c_{side}"]
                                 .rank(ascending=False, method="min").astype("Int64"))
    return table


# --------------------------------------------------------------------------- the pairwise tests and their nulls

@dataclass(frozen=True)
class Scored:
    """One prediction table scored for the pairwise tests: per-fold C (`fold_scores`) and, unless skipped, the
    pooled C's bootstrap draws. Computed once per table, however many pairs it enters."""

    folds: pd.DataFrame
    pooled: stats.PooledC | None


def score(pred: pd.DataFrame, n_boot: int = stats.N_BOOT, bootstrap: bool = True) -> Scored:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an undefined fold C is NaN, and the tests count it so
        return Scored(stats.fold_scores(pred), stats.pooled_c_index(pred, n_boot) if bootstrap else None)


def pair_pvalues(a: Scored, b: Scored) -> dict:
    """The report's three pairwise tests of a against b on one cohort (as `bench.report.analysis` runs them):
    p-values (NaN where undefined) and the mean per-fold difference a - b (seeds averaged within a fold)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paired = stats.paired_fold_diffs(a.folds, b.folds)
        boot = float("nan")
        if a.pooled is not None and b.pooled is not None and a.pooled.resampling == b.pooled.resampling:
            boot = stats.paired_bootstrap(a.pooled, b.pooled).p
        return {"mean_diff": float(np.nanmean(paired.diffs)) if np.isfinite(paired.diffs).any() else float("nan"),
                "corrected_t": stats.corrected_ttest(paired.diffs, paired.ratio).p, "paired_bootstrap": boot,
                "wilcoxon": stats.wilcoxon_p(paired.diffs)[0]}


def _with_holm(rows: list[dict], family: list[str]) -> pd.DataFrame:
    """Holm-adjust each test's p-values within each family (one replicate's table of comparisons)."""
    df = pd.DataFrame(rows)
    for test in TESTS:
        df[f"{test}_holm"] = df.groupby(family, sort=False)[test].transform(lambda p: stats.holm(p.to_numpy()))
    return df


def model_pair_pvalues(preds: pd.DataFrame, n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    """Every pair of models on every cohort of every replicate, each model's seeds averaged as in the report;
    Holm's family is one replicate's comparisons (what one report table would hold)."""
    rows = []
    for (scenario, rep, cohort), part in preds.groupby(["scenario", "replicate", "cohort"], sort=True):
        scored = {m: score(p, n_boot) for m, p in part.groupby("model", sort=True)}
        models = list(scored)
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                rows.append({"scenario": scenario, "replicate": rep, "cohort": cohort, "model_a": a, "model_b": b,
                             **pair_pvalues(scored[a], scored[b])})
    return _with_holm(rows, ["scenario", "replicate"]) if rows else pd.DataFrame()


def seed_pair_pvalues(preds: pd.DataFrame, n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    """Each model against itself trained with another seed (the first two seeds), per cohort and replicate:
    Nadeau and Bengio's null. Holm's family is one replicate's models x cohorts."""
    rows = []
    for (scenario, rep, cohort, model), part in preds.groupby(["scenario", "replicate", "cohort", "model"], sort=True):
        seeds = sorted(part["seed"].unique())
        if len(seeds) < 2:
            continue
        a, b = (score(part[part["seed"] == s].assign(seed=0), n_boot) for s in seeds[:2])  # paired by fold
        rows.append({"scenario": scenario, "replicate": rep, "cohort": cohort, "model_a": f"{model} seed {seeds[0]}",
                     "model_b": f"{model} seed {seeds[1]}", "model": model, **pair_pvalues(a, b)})
    return _with_holm(rows, ["scenario", "replicate"]) if rows else pd.DataFrame()


def rejection_rates(pvalues: pd.DataFrame, by: list[str], alpha: float = ALPHA) -> pd.DataFrame:
    """Per group, test and adjustment: rejections (p < alpha) among the defined tests, their rate and Wilson
    interval, and how many tests were undefined (NaN p: no rejection, not counted)."""
    rows = []
    for key, part in pvalues.groupby(by, sort=True) if by else [((), pvalues)]:
        key = key if isinstance(key, tuple) else (key,)
        for test in TESTS:
            for adjust, col in (("raw", test), ("holm", f"{test}_holm")):
                p = part[col].to_numpy(dtype=float)
                n, k = int(np.isfinite(p).sum()), int((p < alpha).sum())
                lo, hi = wilson(k, n)
                rows.append({**dict(zip(by, key)), "test": test, "adjust": adjust, "rejections": k, "tests": n,
                             "undefined": int(p.size - n), "rate": k / n if n else float("nan"),
                             "mc_low": lo, "mc_high": hi})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- power from the labels alone

def _label_predictions(labels: Labels, risk: np.ndarray) -> pd.DataFrame:
    """A prediction table scoring every patient with a fixed risk on each of the labels' folds."""
    index = {c: i for i, c in enumerate(labels.case_ids)}
    parts = []
    for fold, (train, val) in enumerate(labels.folds):
        for split, ids in (("train", train), ("test", val)):
            idx = [index[c] for c in ids]
            parts.append(pd.DataFrame({"seed": 0, "fold": fold, "split": split, "case_id": ids,
                                       "time": labels.time[idx], "event": 1 - labels.censored[idx], "risk": risk[idx]}))
    return pd.concat(parts, ignore_index=True)


def label_trials(cohorts: list[str], replicates: int, events: tuple[int, ...], noise: float,
                 n_boot: int = stats.N_BOOT) -> pd.DataFrame:
    """One row per (events per test fold, replicate, cohort) of the `shared` scenario's labels, truth and folds
    (replicate r = data seed r, cohorts at the fewest patients holding that many deaths per test fold):
    - the known gap: the truth plus N(0, noise^2) against the truth, by the corrected t (`gap_p`, `gap`);
    - a known null: two such noisy copies against each other, by all three tests (`null_<test>`)."""
    rows = []
    for k in events:
        for rep in range(replicates):
            for ci, cohort in enumerate(cohorts):
                labels = draw_labels(cohort, seed=rep, scale=FLOOR_ONLY, min_test_events=k,
                                     scenario_name=DEFAULT_SCENARIO)
                rng = np.random.default_rng([rep, k, ci])
                noisy = [labels.truth + noise * rng.standard_normal(len(labels.truth)) for _ in range(2)]
                oracle = score(_label_predictions(labels, labels.truth), bootstrap=False)
                one, two = (score(_label_predictions(labels, r), n_boot) for r in noisy)
                gap, null = pair_pvalues(one, oracle), pair_pvalues(one, two)
                deaths = [int((1 - labels.censored[np.isin(labels.case_ids, val)]).sum()) for _, val in labels.folds]
                rows.append({"events_per_fold": k, "replicate": rep, "cohort": cohort, "patients": len(labels.time),
                             "min_test_deaths": min(deaths), "gap": gap["mean_diff"], "gap_p": gap["corrected_t"],
                             **{f"null_{t}": null[t] for t in TESTS}})
    return pd.DataFrame(rows)


def power_table(trials: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per events-per-fold level: the corrected t's power (p < alpha with the gap's sign) with its Wilson interval,
    the mean gap in C, and each test's false-positive rate under the labels-only null."""
    rows = []
    for k, part in trials.groupby("events_per_fold", sort=True):
        found = int(((part["gap_p"] < alpha) & (part["gap"] < 0)).sum())
        n = int(part["gap_p"].notna().sum())
        lo, hi = wilson(found, n)
        row = {"events_per_fold": k, "trials": n, "mean_gap_c": float(part["gap"].mean()), "detections": found,
               "power": found / n if n else float("nan"), "power_low": lo, "power_high": hi}
        for t in TESTS:
            p = part[f"null_{t}"].to_numpy(dtype=float)
            m, r = int(np.isfinite(p).sum()), int((p < alpha).sum())
            row.update({f"fpr_{t}": r / m if m else float("nan"), f"fpr_{t}_low": wilson(r, m)[0],
                        f"fpr_{t}_high": wilson(r, m)[1]})
        rows.append(row)
    return pd.DataFrame(rows)
