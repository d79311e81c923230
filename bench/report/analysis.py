"""Tables and figures from the finished fold runs in the MLflow store (the store is the source of truth).

    python -m bench.report [--tracking-uri URI] [--experiment NAME] [--out results/]

Writes into --out: `cindex_table.{csv,md,tex}` (models x cohorts, mean ± population std of the per-fold
Harrell C), `calibration_table.{csv,md}` (models x cohorts, integrated Brier score and td-AUC),
`cindex_summary.csv` (per model and cohort: IPCW C, `ibs` and `td_auc` means, pooled out-of-fold C with
its bootstrap CI, KM log-rank p), `pairwise_tests.csv`, `km/<cohort>_<model>.png`, `km_grid.png`,
`fold_cindex.png` and `ranks.png`, then logs them as artifacts of a `run_kind=report` run in the same experiment.

In `pairwise_tests.csv`, each model's C is first averaged over seeds within a fold; `n_folds` differences
(`n_seeds` seeds each) give the corrected t-test `df` = n_folds - 1, and `mean_diff` is their mean (a - b).
`t_undefined` says why a t-test has no p. `pooled_diff` and the bootstrap CI and p are for the difference
in pooled out-of-fold C; `wilcoxon_p` is descriptive. `holm_p` corrects the corrected-t p-values over every
row of that file (undefined ones count in m and stay empty), and the table's † marker reads it.

Only `read_store` talks to MLflow; every table and figure function takes DataFrames.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench import stats  # noqa: E402
from bench.data.layout import COHORTS  # noqa: E402
from bench.errors import BenchError, cli_main  # noqa: E402
from bench.profiles import PROFILES  # noqa: E402
from bench.tracking import DEFAULT_TRACKING_URI, PREDICTIONS_ARTIFACT, RUN_KIND, SETTING_TAGS  # noqa: E402

BOOTSTRAP_SEED = 0
SIGNIFICANCE = 0.05
DPI = 150
KM_SIZE = (6.0, 5.0)          # inches; 900 x 750 px at DPI
FOLD_PLOT_SIZE = (7.5, 4.0)
RANKS_SIZE = (6.5, 3.2)
KM_CELL = (3.2, 2.7)          # per panel of the grid
HIGH_COLOR, LOW_COLOR = "#b2182b", "#2166ac"

DISPLAY = {"ghanet": "G-HANet", "abmil": "ABMIL", "transmil": "TransMIL", "snn": "SNN", "mcat": "MCAT"}
ORACLE = "oracle (true risk)"
PUBLISHED_LABEL = "published (MCAT release)"
# MCAT's released mean and population std of the 5-fold val C-index, cohorts BLCA/BRCA/GBMLGG/LUAD/UCEC.
# Source: mahmoodlab/MCAT commit b9cca63, results/ICCV/<experiment>/cindex.csv, columns "Val C-Index (Mean)"
# and "Val C-Index (STD)"; experiments MCATsm_nll_surv_a0.0_5foldcv_gc32_concat, AMILsm_nll_surv_a0.0_
# 5foldcv_gc32_sig (WSI only) and SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig. Rounded to 4 decimals.
PUBLISHED_MCAT = {
    "MCAT": {"blca": (0.6243, 0.0342), "brca": (0.5801, 0.0692), "gbmlgg": (0.8174, 0.0214),
             "luad": (0.6201, 0.0325), "ucec": (0.6219, 0.0194)},
    "AMIL": {"blca": (0.5362, 0.0385), "brca": (0.5644, 0.0503), "gbmlgg": (0.7870, 0.0278),
             "luad": (0.5593, 0.0602), "ucec": (0.6251, 0.0574)},
    "SNN": {"blca": (0.5407, 0.0157), "brca": (0.4661, 0.0575), "gbmlgg": (0.5984, 0.0541),
            "luad": (0.5387, 0.0691), "ucec": (0.4932, 0.0962)},
}
FOLD_FILTER = f"tags.{RUN_KIND} = 'fold' and attributes.status = 'FINISHED'"
REQUIRED_TAGS = ("model", "cohort", "fold", "protocol", "data", "seed")
PRED_COLUMNS = ("case_id", "split", "time", "event", "risk")
RUN_METRICS = ("oracle_c_index", "ibs", "td_auc")  # read from each fold run; calibration needs its bin edges


def display(model: str) -> str:
    return DISPLAY.get(model, model)


def cohort_order(cohorts) -> list[str]:
    """Known cohorts in their canonical order, then any others alphabetically."""
    present = set(cohorts)
    return [c for c in COHORTS if c in present] + sorted(present - set(COHORTS))


# --------------------------------------------------------------------------- reading the store

def _check_store(uri: str) -> None:
    """A missing local store would silently be created empty by MLflow: refuse it instead."""
    if uri.startswith("sqlite:///"):
        path, exists = Path(uri.removeprefix("sqlite:///")), Path.is_file
    elif "://" not in uri or uri.startswith("file://"):
        path, exists = Path(uri.removeprefix("file://")), Path.is_dir
    else:
        return
    if not exists(path):
        raise BenchError(f"No MLflow store at {path} (tracking URI {uri}). Run `python -m bench.run` first, "
                         "or pass --tracking-uri naming the store that holds the runs.")


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], FOLD_FILTER, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _pick_experiment(client, name: str | None, uri: str):
    experiments = client.search_experiments()
    with_folds = [e for e in experiments if client.search_runs([e.experiment_id], FOLD_FILTER, max_results=1)]
    listing = ", ".join(sorted(e.name for e in with_folds)) or "none"
    if name is not None:
        match = [e for e in experiments if e.name == name]
        if not match:
            raise BenchError(f"Experiment {name!r} is not in the MLflow store {uri}. Experiments with finished "
                             f"fold runs: {listing}. Pass one of them with --experiment.")
        return match[0]
    if not with_folds:
        raise BenchError(f"The MLflow store {uri} has no finished fold runs (tag {RUN_KIND}=fold, status FINISHED). "
                         "Run `python -m bench.run` first, or pass --tracking-uri naming the store that holds them.")
    if len(with_folds) > 1:
        raise BenchError(f"The MLflow store {uri} has finished fold runs in several experiments: {listing}. "
                         "Choose one with --experiment NAME.")
    return with_folds[0]


def read_store(uri: str, experiment: str | None, allow_mixed: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Finished fold runs and their predictions: (runs, predictions, experiment_id).

    The runs kept must agree on every `SETTING_TAGS` entry (`n/a` where a run predates the tag), unless
    `allow_mixed`: then the table's caption lists the mix.

    `runs` has one row per (model, cohort, seed, fold) — the latest finished run where a job was rerun —
    with its tags and `RUN_METRICS` (NaN where not logged). `predictions` is every run's predictions.csv
    stacked, with model, cohort, seed and fold added.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _check_store(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = _pick_experiment(client, experiment, uri)
        found = _all_runs(client, exp.experiment_id)
    except MlflowException as err:
        reason = err.message.splitlines()[0].rstrip(".")
        raise BenchError(f"Cannot read the MLflow store at {uri}: {reason}. "
                         "Check --tracking-uri (and that the tracking server is running).") from err
    if not found:
        raise BenchError(f"Experiment {exp.name!r} in {uri} has no finished fold runs (tag {RUN_KIND}=fold, status "
                         "FINISHED). Run `python -m bench.run` for it first.")
    rows = []
    for run in found:
        tags = run.data.tags
        missing = [t for t in REQUIRED_TAGS if t not in tags]
        if missing:
            raise BenchError(f"Fold run {run.info.run_id} in experiment {exp.name!r} lacks the tags "
                             f"{', '.join(missing)}; it was not written by bench.run. Delete it or tag it.")
        rows.append({"run_id": run.info.run_id, "end_time": run.info.end_time or 0,
                     **{t: tags[t] for t in REQUIRED_TAGS},
                     **{t: tags.get(t, "n/a") for t in SETTING_TAGS},
                     **{m: run.data.metrics.get(m, np.nan) for m in RUN_METRICS}})
    runs = pd.DataFrame(rows)
    for tag in ("protocol", "data"):
        if runs[tag].nunique() > 1:
            found_values = ", ".join(sorted(runs[tag].unique()))
            raise BenchError(f"Experiment {exp.name!r} mixes fold runs with {tag} {found_values}; "
                             "one table needs one protocol and one data source. Rerun into separate experiments "
                             "(bench.run's default names them <data>-<protocol>).")
    runs["fold"] = runs["fold"].astype(int)
    runs["seed"] = runs["seed"].astype(int)
    runs = (runs.sort_values(["model", "cohort", "seed", "fold", "end_time", "run_id"], ascending=[1, 1, 1, 1, 0, 0])
                .drop_duplicates(["model", "cohort", "seed", "fold"]).reset_index(drop=True))
    if (mixed := mixed_settings(runs)) and not allow_mixed:
        raise BenchError(f"Experiment {exp.name!r}: the runs of one table differ in {'; '.join(mixed)}. "
                         "A table needs one setting of each: rerun the odd jobs with the table's settings (bench.run "
                         "reruns exactly those), or pass --allow-mixed to build it anyway with the mix in its caption.")
    preds = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs.itertuples():
            where = f"fold run {run.run_id} ({run.model}, {run.cohort}, fold {run.fold}, seed {run.seed})"
            try:
                path = client.download_artifacts(run.run_id, PREDICTIONS_ARTIFACT, os.path.join(tmp, run.run_id))
            except (MlflowException, OSError) as err:
                raise BenchError(f"The {where} has no readable {PREDICTIONS_ARTIFACT} artifact ({err}). "
                                 "Rerun that job with `python -m bench.run`.") from err
            table = pd.read_csv(path)
            lacking = [c for c in PRED_COLUMNS if c not in table.columns]
            if lacking:
                raise BenchError(f"{PREDICTIONS_ARTIFACT} of the {where} lacks the columns {', '.join(lacking)}. "
                                 "Rerun that job with `python -m bench.run`.")
            preds.append(table.assign(model=run.model, cohort=run.cohort, seed=run.seed, fold=run.fold))
    return runs.drop(columns="end_time"), pd.concat(preds, ignore_index=True), exp.experiment_id


def mixed_settings(runs: pd.DataFrame, examples: int = 3) -> list[str]:
    """Each setting on which the runs differ, as `tag: value (n runs, e.g. ids), ...`; [] when they agree."""
    out = []
    for tag in (t for t in SETTING_TAGS if t in runs and runs[t].nunique() > 1):
        parts = [f"{value} ({len(ids)} run{'s' if len(ids) > 1 else ''}, e.g. {', '.join(ids[:examples])})"
                 for value, ids in runs.groupby(tag)["run_id"].agg(list).items()]
        out.append(f"{tag}: {', '.join(parts)}")
    return out


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


def _experiment_facts(runs: pd.DataFrame) -> dict:
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
    facts = _experiment_facts(res.runs)
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


def _fmt_p(p: float) -> str:
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
            f"df = folds - 1), Holm-corrected over all {n_tests} pairwise comparisons in pairwise_tests.csv"
            f"{undefined} (which also holds the paired patient bootstrap of the pooled C and the Wilcoxon "
            f"signed-rank test on the fold differences, descriptive only). "
            f"Mean rank: 1 = best, over cohorts; "
            + (f"Friedman p {_fmt_p(fri_p)}." if not fri_reason else f"no Friedman test ({fri_reason})."))
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


def _cell_text(cell, fmt: str) -> str:
    mu, sd, bold, worse = cell
    if not np.isfinite(mu):
        return "n/a"
    pm = {"latex": "$\\pm$", "md": "±", "csv": "±"}[fmt]
    text = f"{mu:.3f} {pm} {sd:.3f}"
    if worse:
        text += {"latex": "$^\\dagger$", "md": " †", "csv": " †"}[fmt]
    if bold and fmt == "md":
        text = f"**{text}**"
    if bold and fmt == "latex":
        text = f"\\textbf{{{text}}}"
    return text


def table_rows(table: CIndexTable, fmt: str) -> list[list[str]]:
    """Header plus one list of cell strings per row, for `fmt` in csv | md | latex."""
    header = ["Model"] + [c.upper() for c in table.cohorts] + ["Overall mean", "Mean rank"]
    out = [header]
    for row in table.rows:
        cells = [_cell_text(table.cells[(row, c)], fmt) + (f" ({table.partial[(row, c)]})" if (row, c) in table.partial
                                                          else "") for c in table.cohorts]
        overall = table.overall.get(row, np.nan)
        rank = table.rank.get(row, np.nan)
        out.append([row] + cells + [f"{overall:.3f}" if np.isfinite(overall) else "n/a",
                                    f"{rank:.2f}" if np.isfinite(rank) else "–"])
    return out


LATEX_TEXT = (("\\", "\\textbackslash{}"), ("_", "\\_"), ("&", "\\&"), ("%", "\\%"), ("#", "\\#"),
              (">=", "$\\geq$"), ("<", "$<$"), (">", "$>$"), ("±", "$\\pm$"), ("×", "$\\times$"),
              ("†", "$^\\dagger$"), ("—", "---"), ("–", "--"), ("α", "$\\alpha$"))


def _latex_escape(text: str) -> str:
    """Plain text (labels, caption) to LaTeX that compiles with the default font encoding."""
    for plain, latex in LATEX_TEXT:
        text = text.replace(plain, latex)
    return text


def write_table(table: CIndexTable, out: Path) -> list[Path]:
    """cindex_table.csv, .md and .tex; fixed formatting so a rerun is byte-identical."""
    csv_path, md_path, tex_path = out / "cindex_table.csv", out / "cindex_table.md", out / "cindex_table.tex"
    plain = table_rows(table, "csv")
    pd.DataFrame(plain[1:], columns=plain[0]).to_csv(csv_path, index=False, lineterminator="\n")
    md = table_rows(table, "md")
    lines = [f"**Table.** {table.caption}", "", "| " + " | ".join(md[0]) + " |",
             "|" + "|".join(["---"] + [":---:"] * (len(md[0]) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in md[1:]]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tex = table_rows(table, "latex")
    n_cohorts = len(table.cohorts)
    body = [" & ".join(c if 0 < i <= n_cohorts else _latex_escape(c) for i, c in enumerate(r)) + " \\\\"
            for r in tex[1:]]
    caption = _latex_escape(table.caption)
    tex_lines = ["\\begin{table}[t]", "\\centering", "\\small",
                 f"\\caption{{{caption}}}", "\\label{tab:cindex}",
                 "\\begin{tabular}{l" + "c" * (len(tex[0]) - 1) + "}", "\\hline",
                 " & ".join(tex[0]) + " \\\\", "\\hline", *body, "\\hline", "\\end{tabular}", "\\end{table}"]
    tex_path.write_text("\n".join(tex_lines) + "\n", encoding="utf-8")
    return [csv_path, md_path, tex_path]


def _mean_pm_std(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(mean) else "n/a"


def calibration_rows(res: Results, fmt: str) -> list[list[str]]:
    """Header plus one row per model: IBS and td-AUC mean ± std per cohort, then their means over cohorts.

    `fmt` is csv or md; md bolds the lowest IBS of each cohort (lower is better).
    """
    s = res.summary
    cohorts, models = cohort_order(s["cohort"]), sorted(s["model"].unique())
    cells = s.set_index(["cohort", "model"])
    best = s.groupby("cohort")["ibs"].min()
    out = [["Model"] + [f"{c.upper()} {m}" for c in cohorts for m in ("IBS", "td-AUC")] + ["Mean IBS", "Mean td-AUC"]]
    for model in models:
        row = [display(model)]
        for cohort in cohorts:
            if (cohort, model) not in cells.index:
                row += ["n/a", "n/a"]
                continue
            r = cells.loc[(cohort, model)]
            ibs = _mean_pm_std(r["ibs"], r["ibs_std"])
            if fmt == "md" and np.isfinite(r["ibs"]) and r["ibs"] == best[cohort]:
                ibs = f"**{ibs}**"
            row += [ibs, _mean_pm_std(r["td_auc"], r["td_auc_std"])]
        means = s.loc[s["model"] == model, ["ibs", "td_auc"]].mean()
        row += [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in (means["ibs"], means["td_auc"])]
        out.append(row)
    return out


def calibration_caption(res: Results) -> str:
    facts = _experiment_facts(res.runs)
    return ("Integrated Brier score (IBS, lower is better; a constant survival of 0.5 scores 0.25) of each fold "
            "model's discrete survival curves S_1..S_k, read at the bin edges that lie inside the test fold's "
            "follow-up and below the largest training time, with censoring weights from the training fold; and "
            "the mean cumulative/dynamic AUC of 1 - S(t) at the same edges (td-AUC, 0.5 = no ranking). Mean ± "
            f"population std over folds × seeds. Protocol: {facts['protocol']}; data: {facts['data']}; folds: "
            f"{len(facts['folds'])}; seeds: {len(facts['seeds'])}. Bold: lowest IBS per cohort. n/a: undefined "
            "(fewer than two scorable edges, no test death before them) or not logged by the run.")


def write_calibration_table(res: Results, out: Path) -> list[Path]:
    """calibration_table.csv and .md, beside cindex_table.*; fixed formatting so a rerun is byte-identical."""
    csv_path, md_path = out / "calibration_table.csv", out / "calibration_table.md"
    plain = calibration_rows(res, "csv")
    pd.DataFrame(plain[1:], columns=plain[0]).to_csv(csv_path, index=False, lineterminator="\n")
    md = calibration_rows(res, "md")
    lines = [f"**Table.** {calibration_caption(res)}", "", "| " + " | ".join(md[0]) + " |",
             "|" + "|".join(["---"] + [":---:"] * (len(md[0]) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in md[1:]]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [csv_path, md_path]


def write_csvs(res: Results, out: Path) -> list[Path]:
    """pairwise_tests.csv and cindex_summary.csv with fixed float formatting."""
    pw, sm = out / "pairwise_tests.csv", out / "cindex_summary.csv"
    res.pairwise.to_csv(pw, index=False, float_format="%.6g", lineterminator="\n")
    res.summary.to_csv(sm, index=False, float_format="%.6g", lineterminator="\n")
    return [pw, sm]


# --------------------------------------------------------------------------- figures

def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _km_lines(ax, group: pd.DataFrame, with_counts_in_legend: bool) -> float:
    """Draw both KM curves with bands on `ax`; return the log-rank p."""
    _, p = stats.logrank(group["time"], group["event"], group["high"])
    for is_high, color, name in ((True, HIGH_COLOR, "High risk"), (False, LOW_COLOR, "Low risk")):
        part = group[group["high"] == is_high]
        if part.empty:
            continue
        km = stats.km_curve(part["time"], part["event"])
        t = np.r_[0.0, km.time]
        label = f"{name} (n={len(part)}, {int(part['event'].sum())} deaths)" if with_counts_in_legend else name
        ax.step(t, np.r_[1.0, km.survival], where="post", color=color, lw=1.6, label=label)
        ax.fill_between(t, np.r_[1.0, km.low], np.r_[1.0, km.high], step="post", color=color, alpha=0.18, lw=0)
        censored = part[part["event"] == 0]["time"].to_numpy(dtype=float)
        idx = np.searchsorted(km.time, censored, side="right") - 1
        ax.plot(censored, km.survival[np.clip(idx, 0, None)], "|", color=color, ms=5, mew=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    return p


def plot_km(group: pd.DataFrame, title: str, subtitle: str, path: Path) -> Path:
    """KM of the pooled high/low groups, 95% bands, censor ticks, log-rank p, at-risk counts below."""
    fig = plt.figure(figsize=KM_SIZE)
    grid = fig.add_gridspec(2, 1, height_ratios=(4.2, 1.0), hspace=0.32, left=0.2, right=0.96, top=0.88, bottom=0.05)
    ax = fig.add_subplot(grid[0])
    p = _km_lines(ax, group, with_counts_in_legend=True)
    fig.suptitle(title, fontsize=12, y=0.975)
    ax.set_title(subtitle, fontsize=8, color="#444444")
    ax.set_xlabel("Time (months)")
    ax.set_ylabel("Survival probability")
    ax.legend(title=f"log-rank p {_fmt_p(p)}", loc="upper right", fontsize=8, title_fontsize=8, frameon=False)
    ax.grid(alpha=0.3, lw=0.5)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    table = fig.add_subplot(grid[1], sharex=ax)
    for y, (is_high, color) in enumerate(((False, LOW_COLOR), (True, HIGH_COLOR))):
        counts = stats.at_risk(group.loc[group["high"] == is_high, "time"], ticks)
        for t, n in zip(ticks, counts):
            table.text(t, y, str(n), ha="center", va="center", fontsize=8, color=color)
    table.set_yticks([0, 1], ["Low risk", "High risk"], fontsize=8)
    for label, color in zip(table.get_yticklabels(), (LOW_COLOR, HIGH_COLOR)):
        label.set_color(color)
    table.set_ylim(-0.6, 1.6)
    table.set_title("Number at risk", fontsize=8, loc="left")
    table.tick_params(axis="x", labelbottom=False, length=0)
    table.tick_params(axis="y", length=0, pad=16)
    for side in ("top", "right", "bottom", "left"):
        table.spines[side].set_visible(False)
    return _save(fig, path)


def plot_km_grid(res: Results, path: Path) -> Path:
    """All KM panels: cohorts as rows, models as columns (at-risk counts live in the single figures)."""
    cohorts, models = cohort_order(res.groups["cohort"]), sorted(res.groups["model"].unique())
    fig, axes = plt.subplots(len(cohorts), len(models), squeeze=False, sharey=True,
                             figsize=(KM_CELL[0] * len(models), KM_CELL[1] * len(cohorts)))
    for i, cohort in enumerate(cohorts):
        for j, model in enumerate(models):
            ax = axes[i, j]
            g = res.groups[(res.groups["cohort"] == cohort) & (res.groups["model"] == model)]
            if g.empty:
                ax.axis("off")
                continue
            p = _km_lines(ax, g, with_counts_in_legend=False)
            ax.text(0.97, 0.95, f"log-rank p {_fmt_p(p)}", transform=ax.transAxes, ha="right", va="top", fontsize=8)
            ax.set_title(f"{cohort.upper()} — {display(model)}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(cohorts) - 1:
                ax.set_xlabel("Time (months)", fontsize=8)
            if j == 0:
                ax.set_ylabel("Survival probability", fontsize=8)
    handles = [plt.Line2D([], [], color=HIGH_COLOR, lw=1.6), plt.Line2D([], [], color=LOW_COLOR, lw=1.6)]
    fig.legend(handles, ["High risk (test risk > fold model's training median)", "Low risk"], loc="lower center",
               ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def plot_fold_cindex(res: Results, path: Path) -> Path:
    """Per-fold C by cohort and model (dots), model mean per cohort (bar), oracle where known."""
    data = res.scores.assign(Model=res.scores["model"].map(display), Cohort=res.scores["cohort"].str.upper())
    data = data[["Cohort", "Model", "c_index"]]
    order = [c.upper() for c in cohort_order(res.scores["cohort"])]
    hue_order = [display(m) for m in sorted(res.scores["model"].unique())]
    runs = res.runs
    if runs["oracle_c_index"].notna().any():
        oracle = runs.groupby(["cohort", "seed", "fold"])["oracle_c_index"].first().reset_index()
        data = pd.concat([data, pd.DataFrame({"Cohort": oracle["cohort"].str.upper(), "Model": ORACLE,
                                              "c_index": oracle["oracle_c_index"]})], ignore_index=True)
        hue_order.append(ORACLE)
    palette = dict(zip(hue_order, sns.color_palette("colorblind", len(hue_order))))
    if ORACLE in palette:
        palette[ORACLE] = (0.35, 0.35, 0.35)
    fig, ax = plt.subplots(figsize=FOLD_PLOT_SIZE)
    state = np.random.get_state()  # seaborn jitters with the global numpy RNG: fix it so reruns match, then restore
    np.random.seed(0)
    try:
        sns.stripplot(data=data, x="Cohort", y="c_index", hue="Model", order=order, hue_order=hue_order,
                      palette=palette, dodge=True, jitter=0.08, size=4, ax=ax)
    finally:
        np.random.set_state(state)
    width = 0.8 / len(hue_order)  # seaborn's dodge layout: hue j of cohort i sits at i - 0.4 + (j + 0.5) * width
    means = data.groupby(["Cohort", "Model"])["c_index"].mean()
    for i, cohort in enumerate(order):
        for j, model in enumerate(hue_order):
            if (cohort, model) in means.index:
                x = i - 0.4 + (j + 0.5) * width
                ax.hlines(means[(cohort, model)], x - 0.4 * width, x + 0.4 * width, color=palette[model], lw=2)
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.text(ax.get_xlim()[1], 0.5, " random", va="center", ha="left", fontsize=8)
    low = float(np.nanmin(data["c_index"])) if data["c_index"].notna().any() else 0.4
    ax.set_ylim(min(0.4, low - 0.03), 1.0)
    ax.set_ylabel("Harrell's C-index (test fold)")
    ax.set_xlabel("")
    ax.set_title("Per-fold C-index (dots: folds × seeds; lines: mean)", fontsize=10)
    ax.legend(title=None, fontsize=8, loc="upper left", bbox_to_anchor=(1.06, 1.0), frameon=False)
    fig.subplots_adjust(left=0.1, right=0.75, bottom=0.1, top=0.9)
    return _save(fig, path)


def plot_ranks(res: Results, path: Path) -> Path:
    """Critical-difference style diagram of mean ranks across cohorts, with the low-power caveat."""
    means = res.summary.pivot(index="cohort", columns="model", values="c_mean")
    ranks = stats.mean_ranks(means).sort_values(kind="stable")
    n = int(means.dropna(axis=0, how="any").shape[0])
    k = len(ranks)
    fri_stat, fri_p, reason = stats.friedman(means)
    fig = plt.figure(figsize=RANKS_SIZE)
    ax = fig.add_axes((0.02, 0.24, 0.96, 0.72))
    half = (k + 1) // 2
    ax.set_xlim(k + 2.0, -1.0)  # rank 1 (best) on the right, as in Demsar's diagrams; margins hold the labels
    ax.set_ylim(-0.45 * half - 0.25, 1.7)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black", lw=1)
        ax.text(r, 0.3, str(r), ha="center", va="bottom", fontsize=8)
    ax.text((k + 1) / 2, 0.95, "mean rank (1 = best)", ha="center", fontsize=8)
    for i, (model, r) in enumerate(ranks.items()):
        right = i < half  # best models on the right side
        y = -0.45 * (i + 1) if right else -0.45 * (k - i)
        x_text = 0.8 if right else k + 0.2
        ax.plot([r, r, x_text], [0, y, y], color="black", lw=0.8)
        ax.text(x_text + (-0.05 if right else 0.05), y, f"{display(model)} ({r:.2f})", va="center",
                ha="left" if right else "right", fontsize=8)
    cd_text = ""
    if n >= 2 and k >= 2:
        cd = stats.nemenyi_cd(k, n)
        start = 1.0
        ax.plot([start, start + cd], [1.35, 1.35], color="#b2182b", lw=2)
        ax.text(start, 1.45, f"CD = {cd:.2f}", ha="right", va="bottom", fontsize=8, color="#b2182b")
        values = ranks.to_numpy()
        last, n_bars = -1, 0
        for i in range(k):
            j = max(jj for jj in range(i, k) if values[jj] - values[i] < cd)
            if j > i and j > last:
                y = -0.12 - 0.09 * n_bars
                n_bars += 1
                ax.plot([values[i] - 0.03, values[j] + 0.03], [y, y], color="#555555", lw=3, solid_capstyle="butt")
                last = j
        cd_text = f" Red bar: Nemenyi critical difference (α = {SIGNIFICANCE}); grey bars join models within it."
    fri = f"Friedman χ² = {fri_stat:.2f}, p {_fmt_p(fri_p)}" if not reason else f"Friedman test not run ({reason})"
    caption = (f"Mean rank of the mean fold C-index over {n} cohort{'s' if n != 1 else ''}. {fri}.{cd_text} "
               f"With only {n} cohorts these tests have little power: models joined by a bar are not shown "
               "to be equal, only not shown to differ.")
    fig.text(0.03, 0.03, textwrap.fill(caption, 112), ha="left", va="bottom", fontsize=7)
    return _save(fig, path)


def write_figures(res: Results, out: Path) -> list[Path]:
    km_dir = out / "km"
    km_dir.mkdir(parents=True, exist_ok=True)
    for stale in km_dir.glob("*.png"):
        stale.unlink()
    written = []
    for (cohort, model), g in res.groups.groupby(["cohort", "model"], sort=True):
        subtitle = (f"{g['fold'].nunique()} test folds pooled; high risk = test risk above "
                    "its fold model's median training risk")
        written.append(plot_km(g, f"{cohort.upper()} — {display(model)}", subtitle, km_dir / f"{cohort}_{model}.png"))
    written.append(plot_km_grid(res, out / "km_grid.png"))
    written.append(plot_fold_cindex(res, out / "fold_cindex.png"))
    written.append(plot_ranks(res, out / "ranks.png"))
    return written


# --------------------------------------------------------------------------- the command

def log_report_run(uri: str, experiment_id: str, out: Path, files: list[Path], runs: pd.DataFrame) -> str:
    """Create the run_kind=report run in the experiment and attach every written file."""
    from mlflow.tracking import MlflowClient

    facts = _experiment_facts(runs)
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id, run_name="report",
                            tags={RUN_KIND: "report", "protocol": facts["protocol"], "data": facts["data"]})
    for f in files:
        sub = f.parent.relative_to(out).as_posix()
        client.log_artifact(run.info.run_id, str(f), artifact_path=None if sub == "." else sub)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def build(runs: pd.DataFrame, preds: pd.DataFrame, out: Path) -> list[Path]:
    """Every table and figure from DataFrames; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    res = analyse(runs, preds)
    return (write_table(cindex_table(res), out) + write_calibration_table(res, out) + write_csvs(res, out)
            + write_figures(res, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default: %(default)s)")
    parser.add_argument("--experiment", default=None,
                        help="experiment name (default: the single experiment that has finished fold runs)")
    parser.add_argument("--out", default="results", type=Path, help="output folder (default: %(default)s/)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="build a table from runs that differ in a recorded setting (listed in its caption)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an unreachable server fails in seconds
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    runs, preds, experiment_id = read_store(args.tracking_uri, args.experiment, args.allow_mixed)
    files = build(runs, preds, args.out)
    run_id = log_report_run(args.tracking_uri, experiment_id, args.out, files, runs)
    print(f"wrote {len(files)} files to {args.out}/ and logged them to report run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main)())
