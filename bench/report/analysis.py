"""Statistics per cohort and the C-index table's decisions, from the DataFrames `bench.report.store` reads.

`analyse` scores every fold, pools the out-of-fold C, forms the KM risk groups and runs every pairwise test.
`cindex_table` decides the marks (bold: best mean per cohort; †: worse than that best by the Holm-corrected
test) and the extra rows (oracle, MCAT's published numbers). The captions live here too: a caption states
what a table rests on (protocol, folds, seeds, tests, mixed settings), and `CIndexTable` carries its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench import stats
from bench.data.layout import COHORTS
from bench.profiles import PROFILES
from bench.report.store import mixed_settings

BOOTSTRAP_SEED = 0
SIGNIFICANCE = 0.05

DISPLAY = {"ghanet": "G-HANet", "abmil": "ABMIL", "transmil": "TransMIL", "snn": "SNN", "mcat": "MCAT",
           "abmil_snn": "AMIL+SNN", "clam_sb": "CLAM-SB", "coxnet": "CoxNet", "motcat": "MOTCat", "cmta": "CMTA"}
ORACLE = "oracle (true risk)"
PUBLISHED_LABEL = "published (MCAT release)"
# MCAT's released mean and population std of the 5-fold val C-index, cohorts BLCA/BRCA/GBMLGG/LUAD/UCEC.
# Source: mahmoodlab/MCAT commit b9cca63, results/ICCV/<experiment>/cindex.csv, columns "Val C-Index (Mean)"
# and "Val C-Index (STD)"; experiments MCATsm_nll_surv_a0.0_5foldcv_gc32_concat, AMILsm_nll_surv_a0.0_
# 5foldcv_gc32_sig (WSI only), AMILsm_nll_surv_a0.0_5foldcv_gc32_sig_concat (AMIL+SNN, model abmil_snn) and
# SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig. Rounded to 4 decimals.
PUBLISHED_MCAT = {
    "MCAT": {"blca": (0.6243, 0.0342), "brca": (0.5801, 0.0692), "gbmlgg": (0.8174, 0.0214),
             "luad": (0.6201, 0.0325), "ucec": (0.6219, 0.0194)},
    "AMIL": {"blca": (0.5362, 0.0385), "brca": (0.5644, 0.0503), "gbmlgg": (0.7870, 0.0278),
             "luad": (0.5593, 0.0602), "ucec": (0.6251, 0.0574)},
    "AMIL+SNN": {"blca": (0.6049, 0.0455), "brca": (0.5512, 0.0773), "gbmlgg": (0.8162, 0.0111),
                 "luad": (0.5630, 0.0500), "ucec": (0.6137, 0.0519)},
    "SNN": {"blca": (0.5407, 0.0157), "brca": (0.4661, 0.0575), "gbmlgg": (0.5984, 0.0541),
            "luad": (0.5387, 0.0691), "ucec": (0.4932, 0.0962)},
}


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
    summary: pd.DataFrame    # per (cohort, model): means, stds, pooled C and CI, log-rank
    pairwise: pd.DataFrame   # per (cohort, model_a, model_b)
    groups: pd.DataFrame     # KM risk groups: test rows of the first seed with `high`
    runs: pd.DataFrame


def _logged_mean_std(cell_runs: pd.DataFrame, metric: str) -> tuple[float, float]:
    """Mean and population std over a cell's fold runs of a metric the job logged; NaN for runs without it.

    The integrated Brier score and td-AUC need the bin edges, which only the job holds, so they come
    from the runs' metrics rather than from predictions.csv.
    """
    if metric not in cell_runs.columns:
        return float("nan"), float("nan")
    return stats.mean_std(cell_runs[metric])


def analyse(runs: pd.DataFrame, preds: pd.DataFrame, n_boot: int = stats.N_BOOT) -> Results:
    """Per-fold scores, pooled C, KM groups and all pairwise tests, in sorted (cohort, model) order."""
    scores, summary, groups, pairwise = [], [], [], []
    for cohort in cohort_order(preds["cohort"]):
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
            cell_runs = runs[(runs["cohort"] == cohort) & (runs["model"] == model)]
            ibs, ibs_std = _logged_mean_std(cell_runs, "ibs")
            auc, auc_std = _logged_mean_std(cell_runs, "td_auc")
            summary.append({"cohort": cohort, "model": model, "n_fold_runs": len(fs),
                            "c_mean": c_mean, "c_std": c_std, "ipcw_mean": i_mean, "ipcw_std": i_std,
                            "ibs": ibs, "ibs_std": ibs_std, "td_auc": auc, "td_auc_std": auc_std,
                            "pooled_c": pooled[model].estimate, "pooled_ci_low": pooled[model].ci_low,
                            "pooled_ci_high": pooled[model].ci_high, "km_n_high": int(g["high"].sum()),
                            "km_n_low": int((~g["high"]).sum()), "logrank_p": p_lr})
        models = sorted(pooled)
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                paired = stats.paired_fold_diffs(fold_tables[a], fold_tables[b])
                test = stats.corrected_ttest(paired.diffs, paired.ratio)
                finite = paired.diffs[np.isfinite(paired.diffs)]
                row = {"cohort": cohort, "model_a": a, "model_b": b, "n_folds": finite.size,
                       "n_seeds": paired.n_seeds, "df": test.df,
                       "mean_diff": float(finite.mean()) if finite.size else np.nan,
                       "t_corrected_p": test.p, "t_undefined": test.reason}
                if pooled[a].resampling == pooled[b].resampling:
                    boot = stats.paired_bootstrap(pooled[a], pooled[b])
                    row.update(pooled_diff=boot.diff, boot_ci_low=boot.ci_low, boot_ci_high=boot.ci_high, boot_p=boot.p)
                else:  # the two models were not scored on the same patients: no pairing is possible
                    row.update(pooled_diff=pooled[a].estimate - pooled[b].estimate,
                               boot_ci_low=np.nan, boot_ci_high=np.nan, boot_p=np.nan)
                row["wilcoxon_p"] = stats.wilcoxon_p(paired.diffs)[0]
                pairwise.append(row)
    columns = ["cohort", "model_a", "model_b", "n_folds", "n_seeds", "df", "mean_diff", "t_corrected_p", "t_undefined",
               "pooled_diff", "boot_ci_low", "boot_ci_high", "boot_p", "holm_p", "wilcoxon_p"]
    pw = pd.DataFrame(pairwise, columns=[c for c in columns if c != "holm_p"])
    pw.insert(columns.index("holm_p"), "holm_p", stats.holm(pw["t_corrected_p"]) if len(pw) else [])
    return Results(pd.concat(scores, ignore_index=True), pd.DataFrame(summary), pw,
                   pd.concat(groups, ignore_index=True), runs)


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
            "folds": sorted(runs["fold"].unique().tolist()), "seeds": sorted(runs["seed"].unique().tolist())}


def _paper_profile(facts: dict) -> bool:
    """The runs used the paper profile's epochs: only then do MCAT's published 20-epoch rows sit beside them.

    The paper protocol tunes nothing, so the profile's trial budget does not apply to it.
    """
    return facts["profile"] == "paper" and facts["epochs"] == str(PROFILES["paper"].epochs)


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
    for r in res.pairwise.itertuples():
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
    if facts["protocol"] == "paper" and facts["data"] == "tcga" and _paper_profile(facts):
        for name, values in PUBLISHED_MCAT.items():
            label = f"{name} — {PUBLISHED_LABEL}"
            for cohort in cohorts:
                mu, sd = values.get(cohort, (np.nan, np.nan))
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


def _caption(res: Results, facts: dict, fri_p: float, fri_reason: str, alpha: float) -> str:
    folds, seeds = facts["folds"], facts["seeds"]
    n_tests = len(res.pairwise)
    n_undefined = int(res.pairwise["t_corrected_p"].isna().sum())
    undefined = (f"; {n_undefined} of them undefined (no p, see t_undefined), still counted in Holm's m"
                 if n_undefined else "")
    tuning = ("paper default hyperparameters, no tuning, bins cut on the whole cohort including the scored "
              "fold (as published, optimistic), the last epoch scored" if facts["protocol"] == "paper"
              else f"Optuna trials per job: {facts['trials']}")
    text = (f"Harrell's C-index on the held-out fold, mean ± population std over folds × seeds. "
            f"Protocol: {facts['protocol']}; data: {facts['data']}; folds: {len(folds)} "
            f"({', '.join(map(str, folds))}); seeds: {len(seeds)} ({', '.join(map(str, seeds))}); "
            f"{tuning}; profile: {facts['profile']}. "
            f"Bold: best mean per cohort. †: worse than that cohort's best at p < {alpha} by the Nadeau-Bengio "
            f"corrected paired t-test over folds (each model's C averaged over seeds within a fold, so "
            f"df = folds - 1), Holm-corrected over all {n_tests} pairwise comparisons in pairwise_tests.csv "
            f"(which also holds the paired patient bootstrap of the pooled C and the Wilcoxon "
            f"signed-rank test on the fold differences, descriptive only){undefined}. "
            f"Mean rank: 1 = best, over cohorts; "
            + (f"Friedman p {fmt_p(fri_p)}." if not fri_reason else f"no Friedman test ({fri_reason})."))
    text += " " + _events_text(res.scores)
    if facts["data"] in ("synthetic", "semisynthetic"):
        text += f" {ORACLE}: the C-index of the generator's true risk on the same folds, the ceiling."
    if facts["protocol"] == "paper" and facts["data"] == "tcga" and _paper_profile(facts):
        text += (f" Rows marked {PUBLISHED_LABEL}: numbers released with MCAT (mahmoodlab/MCAT results/ICCV, "
                 "last-epoch val C over the same 5 splits), not rerun here; AMIL is MCAT's WSI-only ABMIL.")
    elif facts["protocol"] == "paper" and facts["data"] == "tcga":
        text += (f" MCAT's published numbers are not shown: they trained {PROFILES['paper'].epochs} epochs "
                 f"(profile paper), these runs {facts['epochs']} (profile {facts['profile']}).")
    if _partial_cells(res):
        text += " A cell marked k/n folds rests on fewer folds than the others."
    if mixed := mixed_settings(res.runs):
        text += f" Mixed settings (built with --allow-mixed): {'; '.join(mixed)}."
    return text


def calibration_caption(res: Results) -> str:
    facts = experiment_facts(res.runs)
    return ("Integrated Brier score (IBS, lower is better; a constant survival of 0.5 scores 0.25) of each fold "
            "model's discrete survival curves S_1..S_k, read at the bin edges that lie inside the test fold's "
            "follow-up and below the largest training time, with censoring weights from the training fold; and "
            "the mean cumulative/dynamic AUC of 1 - S(t) at the same edges (td-AUC, 0.5 = no ranking). Mean ± "
            f"population std over folds × seeds. Protocol: {facts['protocol']}; data: {facts['data']}; folds: "
            f"{len(facts['folds'])}; seeds: {len(facts['seeds'])}. Bold: lowest IBS per cohort. n/a: undefined "
            "(fewer than two scorable edges, no test death before them) or not logged by the run.")
