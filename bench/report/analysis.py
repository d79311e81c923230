"""Statistics per cohort and the C-index table's decisions, from the DataFrames `bench.report.store` reads.

`analyse` scores every fold, takes each fold run's calibration and the horizon groups from
`bench.report.calibration`, pools the out-of-fold C, forms the KM risk groups and runs every pairwise test.
With MCAT's released per-fold C-indices (`bench.data.published`, tcga runs only), each of our models is also
tested against each published model on the same folds. `cindex_table` decides the marks (bold: best mean per
cohort; †: worse than that best by the Holm-corrected test among our models) and the extra rows (oracle, MCAT's
published numbers). The captions live here too: a caption states what a table rests on (protocol, folds,
seeds, tests, mixed settings), and `CIndexTable` carries its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench import stats
from bench.data import published as mcat_release
from bench.data.layout import COHORTS
from bench.report import calibration
from bench.report.store import mixed_settings
from models import get_model_class, list_models

BOOTSTRAP_SEED = 0
SIGNIFICANCE = 0.05
# per-fold calibration numbers whose mean and population std over folds x seeds go to cindex_summary.csv
CALIBRATION_MEANS = ("ibs", "ibs_km", "brier_skill", "td_auc")

DISPLAY = {"ghanet": "G-HANet", "abmil": "ABMIL", "transmil": "TransMIL", "snn": "SNN", "mcat": "MCAT",
           "abmil_snn": "AMIL+SNN", "clam_sb": "CLAM-SB", "coxnet": "CoxNet", "motcat": "MOTCat", "cmta": "CMTA",
           "clinical": "Clinical Cox", "clinical_coxnet": "Clinical+CoxNet", "clinical_site": "Clinical Cox+site"}
ORACLE = "oracle (true risk)"
KM_LABEL = "Kaplan-Meier (training fold)"  # the calibration table's reference row
PUBLISHED_LABEL = "published (MCAT release)"
OURS, PUBLISHED = "ours", "published"  # pairwise_tests.csv `comparison`: our two models, or ours against MCAT's release


def display(model: str) -> str:
    return DISPLAY.get(model, model)


def cohort_order(cohorts) -> list[str]:
    """Known cohorts in their canonical order, then any others alphabetically."""
    present = set(cohorts)
    return [c for c in COHORTS if c in present] + sorted(present - set(COHORTS))


# --------------------------------------------------------------------------- statistics per cohort

@dataclass(frozen=True)
class Results:
    """Everything the tables and figures are drawn from."""

    scores: pd.DataFrame     # per (cohort, model, seed, fold): c_index, c_index_ipcw, n_train, n_test, n_events_test
    summary: pd.DataFrame    # per (cohort, model): means, stds, pooled C and CI, calibration, log-rank
    pairwise: pd.DataFrame   # per (cohort, model_a, model_b)
    groups: pd.DataFrame     # KM risk groups: test rows of the first seed with `high`
    runs: pd.DataFrame
    calibration: pd.DataFrame  # per fold run: IBS, its Kaplan-Meier reference and skill, td-AUC, D-calibration
    horizons: pd.DataFrame     # per (cohort, model) risk group: predicted and observed survival at the horizon
    # MCAT's released per-fold C (bench.data.published) on the table's cohorts and folds; None: not looked for
    # (not tcga data), empty: looked for and not found
    published: pd.DataFrame | None = None


def _fold_test(paired: stats.FoldDiffs) -> dict:
    """The per-fold columns of a pairwise_tests.csv row: corrected t-test, mean difference, Wilcoxon p."""
    test = stats.corrected_ttest(paired.diffs, paired.ratio)
    finite = paired.diffs[np.isfinite(paired.diffs)]
    return {"n_folds": finite.size, "n_seeds": paired.n_seeds, "df": test.df,
            "mean_diff": float(finite.mean()) if finite.size else np.nan, "t_corrected_p": test.p,
            "t_undefined": test.reason, "wilcoxon_p": stats.wilcoxon_p(paired.diffs)[0]}


def published_comparison(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict:
    """One of our models' `fold_scores` against a published model's per-fold C (fold, c_index) on the same folds.

    The published C of a fold is paired with each of our seeds of that fold, so our C is averaged over seeds
    within a fold as between our own models, and the t-test's n_test/n_train is our fold runs'. No
    patient-level predictions were released, so the bootstrap columns are NaN.
    """
    theirs_per_seed = ours[["seed", "fold", "n_train", "n_test"]].merge(theirs[["fold", "c_index"]], on="fold")
    return {**_fold_test(stats.paired_fold_diffs(ours, theirs_per_seed)),
            "pooled_diff": np.nan, "boot_ci_low": np.nan, "boot_ci_high": np.nan, "boot_p": np.nan}


def analyse(runs: pd.DataFrame, preds: pd.DataFrame, n_boot: int = stats.N_BOOT,
            published: pd.DataFrame | None = None) -> Results:
    """Per-fold scores, pooled C, KM groups and all pairwise tests, in sorted (cohort, model) order.

    `published`: MCAT's released per-fold C (`bench.data.published.read_published`) for tcga runs; each of
    our models is then tested against each published model of a cohort on the folds both have, and those
    tests are Holm-corrected as a family of their own.
    """
    cohorts = cohort_order(preds["cohort"])
    calib = calibration.fold_calibration(runs, preds, SIGNIFICANCE)
    if published is not None:
        published = published[published["cohort"].isin(cohorts) & published["fold"].isin(runs["fold"].unique())]
    scores, summary, groups, pairwise = [], [], [], []
    for cohort in cohorts:
        pooled = {}
        fold_tables = {}
        for model in sorted(preds.loc[preds["cohort"] == cohort, "model"].unique()):
            pred = preds[(preds["cohort"] == cohort) & (preds["model"] == model)]
            fs = stats.fold_scores(pred)
            fold_tables[model] = fs
            scores.append(fs.assign(cohort=cohort, model=model))
            pooled[model] = stats.pooled_c_index(pred, n_boot, BOOTSTRAP_SEED)
            g = stats.risk_groups(pred).assign(cohort=cohort, model=model)
            groups.append(g)
            _, p_lr = stats.logrank(g["time"], g["event"], g["high"])
            c_mean, c_std = stats.mean_std(fs["c_index"])
            i_mean, i_std = stats.mean_std(fs["c_index_ipcw"])
            cell = calib[(calib["cohort"] == cohort) & (calib["model"] == model)]
            summary.append({"cohort": cohort, "model": model, "n_fold_runs": len(fs),
                            "c_mean": c_mean, "c_std": c_std, "ipcw_mean": i_mean, "ipcw_std": i_std,
                            **{name: value for metric in CALIBRATION_MEANS
                               for name, value in zip((metric, f"{metric}_std"), stats.mean_std(cell[metric]))},
                            "dcal_rejected": int(cell["dcal_reject"].sum()),
                            "dcal_tested": int(cell["dcal_p"].notna().sum()),
                            "pooled_c": pooled[model].estimate, "pooled_ci_low": pooled[model].ci_low,
                            "pooled_ci_high": pooled[model].ci_high, "km_n_high": int(g["high"].sum()),
                            "km_n_low": int((~g["high"]).sum()), "logrank_p": p_lr})
        models = sorted(pooled)
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                row = {"cohort": cohort, "model_a": a, "model_b": b, "comparison": OURS,
                       **_fold_test(stats.paired_fold_diffs(fold_tables[a], fold_tables[b]))}
                if pooled[a].resampling == pooled[b].resampling:
                    boot = stats.paired_bootstrap(pooled[a], pooled[b])
                    row.update(pooled_diff=boot.diff, boot_ci_low=boot.ci_low, boot_ci_high=boot.ci_high, boot_p=boot.p)
                else:  # the two models were not scored on the same patients: no pairing is possible
                    row.update(pooled_diff=pooled[a].estimate - pooled[b].estimate,
                               boot_ci_low=np.nan, boot_ci_high=np.nan, boot_p=np.nan)
                pairwise.append(row)
        for label in (mcat_release.MODELS if published is not None else ()):
            fold_c = published[(published["cohort"] == cohort) & (published["label"] == label)]
            if len(fold_c):
                pairwise += [{"cohort": cohort, "model_a": a, "model_b": label, "comparison": PUBLISHED,
                              **published_comparison(fold_tables[a], fold_c)} for a in models]
    columns = ["cohort", "model_a", "model_b", "comparison", "n_folds", "n_seeds", "df", "mean_diff", "t_corrected_p",
               "t_undefined", "pooled_diff", "boot_ci_low", "boot_ci_high", "boot_p", "holm_p", "wilcoxon_p"]
    pw = pd.DataFrame(pairwise, columns=[c for c in columns if c != "holm_p"])
    holm_p = np.full(len(pw), np.nan)
    for family in (OURS, PUBLISHED):  # the published comparisons never change the m of our own, nor the † marks
        members = (pw["comparison"] == family).to_numpy()
        holm_p[members] = stats.holm(pw.loc[members, "t_corrected_p"])
    pw.insert(columns.index("holm_p"), "holm_p", holm_p)
    return Results(pd.concat(scores, ignore_index=True), pd.DataFrame(summary), pw,
                   pd.concat(groups, ignore_index=True), runs, calib, calibration.horizon_groups(runs, preds),
                   None if published is None else published.reset_index(drop=True))


# --------------------------------------------------------------------------- the C-index table

@dataclass(frozen=True)
class CIndexTable:
    """Display-ready table: one entry per row label; cells as (mean, std, bold, worse)."""

    rows: list[str]
    cohorts: list[str]
    cells: dict            # (row, cohort) -> (mean, std, bold, worse)
    overall: dict          # row -> overall mean over cohorts
    rank: dict             # row -> mean rank (model rows only)
    caption: str
    partial: dict = field(default_factory=dict)  # (row, cohort) -> "k/n folds" where a cell lacks folds


def experiment_facts(runs: pd.DataFrame) -> dict:
    def one(col):
        values = sorted(runs[col].astype(str).unique())
        return ", ".join(values)
    return {"protocol": one("protocol"), "data": one("data"), "trials": one("trials"), "profile": one("profile"),
            "epochs": one("epochs") if "epochs" in runs else "n/a",
            "suite_version": one("suite_version") if "suite_version" in runs else "n/a",
            "folds": sorted(runs["fold"].unique().tolist()), "seeds": sorted(runs["seed"].unique().tolist())}


def _partial_cells(res: Results) -> dict:
    """(row, cohort) -> `k/n folds` for cells with fewer complete folds (every seed finished) than the table."""
    seeds = res.scores["seed"].nunique()
    n = res.scores["fold"].nunique()
    per_fold = res.scores.groupby(["cohort", "model", "fold"])["seed"].nunique()
    complete = (per_fold == seeds).groupby(["cohort", "model"]).sum()
    return {(display(m), c): f"{k}/{n} folds" for (c, m), k in complete.items() if k < n}


def cindex_table(res: Results, alpha: float = SIGNIFICANCE) -> CIndexTable:
    """Models x cohorts: bold = best mean per cohort; † = significantly worse than that best (Holm p < alpha)."""
    s = res.summary
    cohorts = cohort_order(s["cohort"])
    models = sorted(s["model"].unique())
    means = s.pivot(index="cohort", columns="model", values="c_mean").reindex(index=cohorts, columns=models)
    stds = s.pivot(index="cohort", columns="model", values="c_std").reindex(index=cohorts, columns=models)
    holm_p = {}
    for r in res.pairwise[res.pairwise["comparison"] == OURS].itertuples():
        holm_p[(r.cohort, r.model_a, r.model_b)] = holm_p[(r.cohort, r.model_b, r.model_a)] = r.holm_p
    cells = {}
    for cohort in cohorts:
        best = means.loc[cohort].max()
        for m in models:
            mu = means.loc[cohort, m]
            is_best = bool(np.isfinite(mu) and mu == best)
            worse = (not is_best) and np.isfinite(mu) and any(
                means.loc[cohort, b] == best and holm_p.get((cohort, b, m), np.nan) < alpha for b in models)
            cells[(display(m), cohort)] = (mu, stds.loc[cohort, m], is_best, bool(worse))
    rows = [display(m) for m in models]
    overall = {display(m): float(means[m].mean()) for m in models}
    ranks = stats.mean_ranks(means)
    rank = {display(m): float(ranks[m]) for m in models}
    facts = experiment_facts(res.runs)
    extra_rows = []
    if facts["data"] in ("synthetic", "semisynthetic") and res.runs["oracle_c_index"].notna().any():
        oracle = res.runs.groupby(["cohort", "seed", "fold"])["oracle_c_index"].first().reset_index()
        for cohort in cohorts:
            mu, sd = stats.mean_std(oracle.loc[oracle["cohort"] == cohort, "oracle_c_index"])
            cells[(ORACLE, cohort)] = (mu, sd, False, False)
        overall[ORACLE] = float(np.nanmean([cells[(ORACLE, c)][0] for c in cohorts]))
        extra_rows.append(ORACLE)
    published = res.published if res.published is not None else pd.DataFrame(columns=mcat_release.COLUMNS)
    for name in mcat_release.MODELS:
        fold_c = published[published["label"] == name]
        if fold_c.empty:
            continue
        label = f"{name} — {PUBLISHED_LABEL}"
        for cohort in cohorts:
            mu, sd = stats.mean_std(fold_c.loc[fold_c["cohort"] == cohort, "c_index"])
            cells[(label, cohort)] = (mu, sd, False, False)
        overall[label] = float(np.nanmean([cells[(label, c)][0] for c in cohorts]))
        extra_rows.append(label)
    _, fri_p, fri_reason = stats.friedman(means)
    return CIndexTable(rows + extra_rows, cohorts, cells, overall, rank, _caption(res, facts, fri_p, fri_reason, alpha),
                       _partial_cells(res))


def fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _events_text(scores: pd.DataFrame) -> str:
    """Events per test fold by cohort, so a reader can tell a precise column from a noisy one."""
    span = scores.groupby("cohort")["n_events_test"].agg(["min", "max"]).reindex(cohort_order(scores["cohort"]))
    parts = [f"{c.upper()} {lo}" if lo == hi else f"{c.upper()} {lo}–{hi}" for c, lo, hi in span.itertuples()]
    return (f"Events per test fold: {', '.join(parts)}; a fold's C rests on its events, so a cohort with few "
            "has a noisy column.")


def _published_text(res: Results) -> str:
    """What the published rows and comparisons are, or, on tcga data without them, how to get them."""
    if res.published is None:
        return ""
    if res.published.empty:
        return (" MCAT's released per-fold C-indices were not found (looked in the runs' data root, under "
                "published/mcat/, or in --published DIR): `python -m bench.data fetch --out <data root>` downloads "
                "them, and the report then adds them as rows and tests every model against them on the same folds.")
    n = int((res.pairwise["comparison"] == PUBLISHED).sum())
    return (f" Rows marked {PUBLISHED_LABEL}: the per-fold val C-indices released with MCAT (mahmoodlab/MCAT "
            "results/ICCV, summary_latest.csv) on the same splits and folds, not rerun here: each scored on the val "
            "fold after the last (20th) epoch, bins cut on the whole cohort, one seed; AMIL is MCAT's WSI-only "
            "ABMIL, AMIL+SNN its concat fusion. pairwise_tests.csv tests each of our models against each of them "
            "(comparison = published) by the same corrected t-test on the same folds, Holm-corrected over those "
            f"{n} comparisons as a family of their own (no † comes from them); their bootstrap columns are empty, "
            "as no patient-level predictions were released.")


# The corrected t-test's error rates measured on data of known truth at 5 folds (results/validity/null: R = 20
# null replicates x 3 cohorts, SNN and CoxNet; power from the labels alone, a gap of about 0.06 in C), so a
# reader of a 5-fold table knows what "p < 0.05" has meant there. tests/test_validity_caption.py holds it to the CSVs.
MEASURED_AT_5_FOLDS = {"null_rejections": (2, 60), "power": {8: 0.100, 16: 0.233, 32: 0.483}}


def _measured_text(folds) -> str:
    if len(folds) != 5:
        return ""
    k, n = MEASURED_AT_5_FOLDS["null_rejections"]
    power = MEASURED_AT_5_FOLDS["power"]
    return (f" Measured on data of known truth at 5 folds (results/validity/null): the corrected t-test rejected {k} "
            f"of {n} true nulls at p < 0.05 ({100 * k / n:.1f}%), and found a gap of about 0.06 in C in "
            + ", ".join(f"{100 * v:.0f}% of trials at {e}" for e, v in power.items()) + " deaths per test fold.")


def _caption(res: Results, facts: dict, fri_p: float, fri_reason: str, alpha: float) -> str:
    folds, seeds = facts["folds"], facts["seeds"]
    ours = res.pairwise[res.pairwise["comparison"] == OURS]
    n_tests = len(ours)
    scope = " of our models" if n_tests < len(res.pairwise) else ""  # the published ones are a family of their own
    n_undefined = int(ours["t_corrected_p"].isna().sum())
    undefined = (f"; {n_undefined} of them undefined (no p, see t_undefined), still counted in Holm's m"
                 if n_undefined else "")
    tuning = ("paper default hyperparameters, no tuning, bins cut on the whole cohort including the scored "
              "fold (as published, optimistic), the last epoch scored" if facts["protocol"] == "paper"
              else f"Optuna trials per job: {facts['trials']}")
    if facts["protocol"] == "paper":  # reference values chosen on these splits' val folds, named per model
        notes = [getattr(get_model_class(m), "PAPER_PARAMS_NOTE", "") for m in sorted(res.runs["model"].unique())
                 if m in list_models()]
        tuning += "".join(f" ({n})" for n in notes if n)
    text = (f"Harrell's C-index on the held-out fold, mean ± population std over folds × seeds. "
            f"Protocol: {facts['protocol']}; data: {facts['data']}; folds: {len(folds)} "
            f"({', '.join(map(str, folds))}); seeds: {len(seeds)} ({', '.join(map(str, seeds))}); "
            f"{tuning}; profile: {facts['profile']}; suite version: {facts['suite_version']}. "
            f"Bold: best mean per cohort. †: worse than that cohort's best at p < {alpha} by the Nadeau-Bengio "
            f"corrected paired t-test over folds (each model's C averaged over seeds within a fold, so "
            f"df = folds - 1), Holm-corrected over all {n_tests} pairwise comparisons{scope} in "
            f"pairwise_tests.csv (which also holds the paired patient bootstrap of the pooled C, whose p is "
            f"conditional on the fitted fold models, resampling test patients but not training sets or seeds, and "
            f"uncorrected for the number of comparisons; and the Wilcoxon signed-rank test on the fold differences, "
            f"descriptive only){undefined}. "
            f"Mean rank: 1 = best, over cohorts; "
            + (f"Friedman p {fmt_p(fri_p)}." if not fri_reason else f"no Friedman test ({fri_reason})."))
    text += _measured_text(folds) + " " + _events_text(res.scores)
    if facts["data"] in ("synthetic", "semisynthetic"):
        text += f" {ORACLE}: the C-index of the generator's true risk on the same folds, the ceiling."
    text += _published_text(res)
    if _partial_cells(res):
        text += " A cell marked k/n folds rests on fewer folds than the others."
    if mixed := mixed_settings(res.runs):
        text += f" Mixed settings (built with --allow-mixed): {'; '.join(mixed)}."
    return text


def calibration_caption(res: Results) -> str:
    facts = experiment_facts(res.runs)
    calib = res.calibration
    tested = int(calib["dcal_p"].notna().sum())
    horizons = res.horizons.groupby("cohort")["horizon"].first().reindex(cohort_order(res.horizons["cohort"]))
    horizon_text = ", ".join(f"{c.upper()} {h:.1f}" for c, h in horizons.items()) or "none"
    return ("Integrated Brier score (IBS, lower is better; a constant survival of 0.5 scores 0.25) of each fold "
            "model's discrete survival curves S_1..S_k, read at the inner bin edges that lie inside the test fold's "
            "follow-up and below the largest training time, with censoring weights from the training fold. "
            f"{KM_LABEL}: the training fold's Kaplan-Meier curve given to every test patient, scored on the same "
            "edges; it knows nothing about the patient, cannot rank (td-AUC 0.5) and is the reference of the Brier "
            "skill score BSS = 1 - IBS / IBS_KM, per fold (positive: better than the population curve). td-AUC: "
            "the mean cumulative/dynamic AUC of 1 - S(t) at the same edges (0.5 = no ranking). D-cal: fold runs "
            "whose D-calibration test (Haider et al., JMLR 2020: S_i(t_i) at each test patient's own time, linear "
            "between the bin edges, in 10 equal bins, censored patients spread over the bins below; chi-square, "
            f"9 df) rejects at a Benjamini-Hochberg corrected p < {SIGNIFICANCE} over all {tested} fold runs of the "
            "table, of the fold runs tested; heavy censoring makes the test conservative. Mean ± population std over "
            f"folds × seeds. Protocol: {facts['protocol']}; data: {facts['data']}; folds: {len(facts['folds'])}; "
            f"seeds: {len(facts['seeds'])}; suite version: {facts['suite_version']}. All of it is computed from "
            "each run's predictions.csv and bin_edges. Bold: the lowest IBS of a model per cohort. n/a: undefined "
            "(fewer than two scorable edges, no test death within the training follow-up) or a run without bin_edges. "
            f"calibration/<cohort>.png: predicted against observed (Kaplan-Meier, 95% interval) survival at the "
            f"horizon t* (months: {horizon_text}; the median over folds of the training fold's median follow-up) "
            f"in {calibration.CALIBRATION_GROUPS} groups of the first seed's test patients pooled over folds.")
