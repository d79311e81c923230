"""bench.report: the table's marks, published and oracle rows, figure files, and the CLI on a real sqlite store."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy import stats as sps

from bench import stats
from bench.data import published
from bench.report import analysis, calibration, figures, main, readme, store, tables
from bench.errors import BenchError, cli_main
from bench.survival import fit_bin_edges
from bench.tracking import PREDICTIONS_ARTIFACT, RUN_KIND, ui_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fold_predictions(cohort_seed: int, n: int, folds: int, strength: float, model_seed: int) -> list[pd.DataFrame]:
    """Per-fold predictions.csv tables in the runner's contract; risk = strength * true risk + noise."""
    rng = np.random.default_rng(cohort_seed)
    z = rng.normal(size=n)
    t = rng.exponential(30.0 * np.exp(-z))
    cens = rng.uniform(5, 90, size=n)
    time, event = np.minimum(t, cens).round(2), (t <= cens).astype(int)
    risk = strength * z + np.random.default_rng([cohort_seed, model_seed]).normal(size=n)
    surv = (1.0 + np.exp(risk))[:, None] ** -np.array([[0.25, 0.5, 0.75, 1.0]])  # decreasing in the bin
    fold_of = np.arange(n) % folds
    out = []
    for k in range(folds):
        out.append(pd.DataFrame({
            "case_id": [f"TCGA-{cohort_seed:02d}-{i:04d}" for i in range(n)],
            "split": np.where(fold_of == k, "test", "train"), "time": time, "event": event, "bin": 0,
            "risk": -surv.sum(axis=1), **{f"S_{j + 1}": surv[:, j] for j in range(4)}, "true_risk": z}))
    return out


def edges_param(table: pd.DataFrame) -> str:
    """The `bin_edges` param a job logs for this fold: cut on its training rows, 4 decimals."""
    train = table[table["split"] == "train"]
    return ",".join(f"{e:.4f}" for e in fit_bin_edges(train["time"].to_numpy(), train["event"].to_numpy()))


def frames(models: dict, cohorts=("blca",), n: int = 60, folds: int = 5, protocol: str = "nested",
           data: str = "synthetic", seeds=(1,), edges: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, predictions) as read_store returns them; `edges` False: runs that logged no `bin_edges`."""
    runs, preds = [], []
    for c, cohort in enumerate(cohorts):
        for m, (model, strength) in enumerate(sorted(models.items())):
            for seed in seeds:
                for k, table in enumerate(fold_predictions(c, n, folds, strength, 10 * m + seed)):
                    runs.append({"run_id": f"{cohort}-{model}-{k}-{seed}", "model": model, "cohort": cohort, "fold": k,
                                 "protocol": protocol, "data": data, "seed": seed, "trials": "4", "profile": "quick",
                                 "oracle_c_index": 0.75 if data == "synthetic" else np.nan,
                                 "bin_edges": edges_param(table) if edges else ""})
                    preds.append(table.assign(model=model, cohort=cohort, seed=seed, fold=k))
    return pd.DataFrame(runs), pd.concat(preds, ignore_index=True)


def analysed(models: dict, **kwargs) -> analysis.Results:
    """`frames` analysed with a small bootstrap; no MLflow involved."""
    return analysis.analyse(*frames(models, **kwargs), n_boot=200)


def test_table_marks_the_clearly_worse_model_and_bolds_the_best():
    res = analysed({"good": 3.0, "twin": 3.0, "bad": -3.0}, n=100)
    table = analysis.cindex_table(res)
    rows = {r[0]: r for r in tables.table_rows(table, "md")[1:]}
    means = res.summary.set_index("model")["c_mean"]
    best = means.idxmax()
    assert best in ("good", "twin") and rows[best][1].startswith("**")
    assert sum(r[1].startswith("**") for r in rows.values()) == 1
    assert "†" in rows["bad"][1] and "**" not in rows["bad"][1]
    assert "†" not in rows["good"][1] and "†" not in rows["twin"][1]  # equally good: no evidence either is worse
    pw = res.pairwise.set_index(["model_a", "model_b"])
    assert pw.loc[("bad", best), "holm_p"] < 0.05 < pw.loc[("good", "twin"), "holm_p"]
    assert pw.loc[("bad", best), "mean_diff"] < -0.3  # a - b with a = bad
    assert pw.loc[("bad", best), "boot_ci_high"] < 0
    assert rows["bad"][-1] == "3.00"  # mean rank column
    cell = table.cells[("good", "blca")]
    fold_c = res.scores.loc[res.scores["model"] == "good", "c_index"]
    assert cell[0] == pytest.approx(fold_c.mean()) and cell[1] == pytest.approx(fold_c.std(ddof=0))
    latex = tables.table_rows(table, "latex")
    assert latex[1 + sorted(["good", "twin", "bad"]).index("bad")][1].endswith("$^\\dagger$")


def test_pairwise_tests_average_seeds_within_folds_two_seeds_five_folds_df_four():
    one = analysed({"a": 1.0, "b": 0.5}, folds=5, n=50)
    two = analysed({"a": 1.0, "b": 0.5}, folds=5, n=50, seeds=(1, 2))
    row = two.pairwise.iloc[0]
    assert (row["n_folds"], row["n_seeds"], row["df"]) == (5, 2, 4.0)
    assert (one.pairwise.iloc[0]["n_seeds"], one.pairwise.iloc[0]["df"]) == (1, 4.0)
    # the same p as the t-test on each model's seed-averaged C per fold, computed by hand from the scores
    means = two.scores.groupby(["model", "fold"])["c_index"].mean().unstack("model")
    assert means.shape == (5, 2)
    d = (means["a"] - means["b"]).to_numpy()
    t = d.mean() / np.sqrt(d.var(ddof=1) * (1 / 5 + 10 / 40))
    assert row["t_corrected_p"] == pytest.approx(2 * sps.t.sf(abs(t), 4), rel=1e-9)
    assert row["mean_diff"] == pytest.approx(d.mean())
    assert row["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert "wilcoxon_p" in one.pairwise.columns  # on the fold differences, with one seed too
    caption = analysis.cindex_table(two).caption
    assert "df = folds - 1" in caption and "descriptive only" in caption and "seeds: 2 (1, 2)" in caption
    assert two.summary["n_fold_runs"].tolist() == [10, 10]
    assert two.groups["seed"].unique().tolist() == [1]  # KM uses one seed, so each patient appears once


def test_undefined_comparisons_count_in_holm_and_the_caption_says_how_many():
    runs, preds = frames({"a": 1.0, "b": 0.5}, cohorts=("blca", "luad"), n=60, folds=3)
    no_events = (preds["cohort"] == "blca") & (preds["split"] == "test") & (preds["fold"] > 0)
    preds.loc[no_events, "event"] = 0  # BLCA keeps one fold with a defined C: no t-test there
    with pytest.warns(UserWarning):
        res = analysis.analyse(runs, preds, n_boot=200)
    pw = res.pairwise.set_index("cohort")
    assert math.isnan(pw.loc["blca", "t_corrected_p"]) and math.isnan(pw.loc["blca", "holm_p"])
    assert pw.loc["blca", "n_folds"] == 1 and "needs >= 2 paired fold differences" in pw.loc["blca", "t_undefined"]
    p = pw.loc["luad", "t_corrected_p"]
    assert 0 < p < 0.5 and pw.loc["luad", "holm_p"] == pytest.approx(2 * p)  # m = 2, the undefined one included
    caption = analysis.cindex_table(res).caption
    assert "all 2 pairwise comparisons in pairwise_tests.csv (which also" in caption
    assert "descriptive only); 1 of them undefined (no p, see t_undefined), still counted in Holm's m." in caption


def test_calibration_is_computed_from_predictions_and_edges_into_the_summary_and_its_own_table(tmp_path):
    res = analysed({"abmil": 1.0, "ghanet": 2.0}, cohorts=("blca", "luad"), n=30, folds=4)
    runs, preds = frames({"abmil": 1.0, "ghanet": 2.0}, cohorts=("blca", "luad"), n=30, folds=4)
    per_fold = []
    for run in runs.itertuples():
        part = preds[(preds["cohort"] == run.cohort) & (preds["model"] == run.model) & (preds["fold"] == run.fold)]
        train, test = part[part["split"] == "train"], part[part["split"] == "test"]
        edges = np.array([float(e) for e in run.bin_edges.split(",")])
        per_fold.append({"cohort": run.cohort, "model": run.model, **stats.fold_calibration(
            train["time"], train["event"], test["time"], test["event"], test[["S_1", "S_2", "S_3", "S_4"]], edges)})
    expected = pd.DataFrame(per_fold)
    s = res.summary.set_index(["cohort", "model"])
    for metric in ("ibs", "ibs_km", "brier_skill", "td_auc"):
        cell = expected.loc[(expected["cohort"] == "blca") & (expected["model"] == "ghanet"), metric]
        assert s.loc[("blca", "ghanet"), metric] == pytest.approx(cell.mean()), metric
        assert s.loc[("blca", "ghanet"), f"{metric}_std"] == pytest.approx(cell.std(ddof=0)), metric
    # the skill is per fold: the mean of 1 - IBS/IBS_KM, not 1 - mean IBS / mean IBS_KM
    assert s.loc[("luad", "abmil"), "brier_skill"] == pytest.approx(
        (1 - expected["ibs"] / expected["ibs_km"])[(expected["cohort"] == "luad") & (expected["model"] == "abmil")].mean())
    # D-calibration: Benjamini-Hochberg over the table's 16 fold runs, rejections counted per cell
    p = expected["dcal_p"].to_numpy()
    np.testing.assert_allclose(res.calibration["dcal_bh_p"], stats.benjamini_hochberg(p))
    assert res.calibration["dcal_reject"].tolist() == (stats.benjamini_hochberg(p) < 0.05).tolist()
    assert s["dcal_tested"].tolist() == [4] * 4
    assert s["dcal_rejected"].tolist() == res.calibration.groupby(["cohort", "model"])["dcal_reject"].sum().tolist()

    paths = tables.write_csvs(res, tmp_path)
    assert [p.name for p in paths] == ["pairwise_tests.csv", "cindex_summary.csv", "calibration_folds.csv",
                                       "calibration_groups.csv"]
    summary = pd.read_csv(tmp_path / "cindex_summary.csv")
    assert {"ibs", "ibs_km", "brier_skill", "td_auc", "dcal_rejected", "dcal_tested"} <= set(summary.columns)
    folds = pd.read_csv(tmp_path / "calibration_folds.csv")
    assert len(folds) == 16 and {"run_id", "dcal_p", "dcal_bh_p", "ibs_km"} <= set(folds.columns)
    files = tables.write_calibration_table(res, tmp_path)
    assert [f.name for f in files] == ["calibration_table.csv", "calibration_table.md"]
    table = pd.read_csv(tmp_path / "calibration_table.csv").set_index("Model")
    assert list(table.columns) == [f"{c} {f}" for c in ("BLCA", "LUAD") for f in ("IBS", "BSS", "td-AUC", "D-cal")] + [
        "Mean IBS", "Mean BSS", "Mean td-AUC", "D-cal"]
    assert table.index.tolist() == ["ABMIL", "G-HANet", analysis.KM_LABEL]
    km = calibration.km_reference(res.calibration).set_index("cohort")
    assert table.loc[analysis.KM_LABEL, "BLCA IBS"] == f"{km.loc['blca', 'ibs_km']:.3f} ± {km.loc['blca', 'ibs_km_std']:.3f}"
    # every model of a fold sees the same training patients and edges: one reference per fold
    assert km.loc["blca", "ibs_km"] == pytest.approx(expected.loc[expected["cohort"] == "blca", "ibs_km"].mean())
    ghanet = s.loc[("blca", "ghanet")]
    assert table.loc["G-HANet", "BLCA IBS"] == f"{ghanet['ibs']:.3f} ± {ghanet['ibs_std']:.3f}"
    assert table.loc["G-HANet", "BLCA D-cal"] == f"{int(ghanet['dcal_rejected'])}/4"
    md = (tmp_path / "calibration_table.md").read_text(encoding="utf-8")
    best = s.loc["blca", "ibs"].idxmin()
    assert f"| {analysis.display(best)} | **{s.loc[('blca', best), 'ibs']:.3f}" in md  # lower is better: bold
    assert "Integrated Brier score" in md and "Benjamini-Hochberg" in md and "1 - IBS / IBS_KM" in md
    assert "over all 16 fold runs" in md and "suite version" in md

    no_edges = analysis.analyse(*frames({"abmil": 1.0}, n=30, folds=3, edges=False), n_boot=200)
    assert no_edges.summary[["ibs", "ibs_km", "brier_skill", "td_auc"]].isna().all().all()  # n/a, never 0
    assert tables.calibration_rows(no_edges, "csv")[1][1:] == ["n/a"] * 8  # one cohort: 4 cells, 4 means
    assert no_edges.horizons.empty


def test_calibration_groups_at_the_horizon_use_each_fold_models_own_curve():
    runs, preds = frames({"abmil": 1.0, "ghanet": 2.0}, n=40, folds=4)
    groups = calibration.horizon_groups(runs, preds)
    first = preds[preds["split"] == "train"].drop_duplicates(["fold", "case_id"])
    horizon = float(np.median(first.groupby("fold")["time"].median()))
    assert groups["horizon"].unique().tolist() == [horizon]
    assert groups.groupby("model")["n"].sum().tolist() == [40, 40] and groups["group"].max() == 4
    model = preds[(preds["model"] == "ghanet") & (preds["split"] == "test")]
    predicted = []
    for run in runs[runs["model"] == "ghanet"].itertuples():
        test = model[model["fold"] == run.fold]
        edges = np.array([float(e) for e in run.bin_edges.split(",")])
        predicted.append(stats.survival_at(np.full(len(test), horizon), test[["S_1", "S_2", "S_3", "S_4"]], edges))
    mine = groups[groups["model"] == "ghanet"]
    assert mine["predicted"].mean() == pytest.approx(np.concatenate(predicted).mean())  # equal groups of 10


def test_caption_gives_each_cohorts_range_of_test_events():
    res = analysed({"a": 1.0, "b": 0.5}, cohorts=("ucec", "blca"), folds=3, n=30)
    caption = analysis.cindex_table(res).caption
    spans = []
    for cohort in ("blca", "ucec"):  # canonical order, whatever order the runs came in
        n = res.scores.loc[res.scores["cohort"] == cohort, "n_events_test"]
        assert n.min() < n.max()  # the fixture's folds differ, so the range form is what is checked
        spans.append(f"{cohort.upper()} {n.min()}–{n.max()}")
    assert f"Events per test fold: {', '.join(spans)};" in caption


def made_up_published(cohorts=("blca",), folds=5) -> pd.DataFrame:
    """MCAT's release as `read_published` returns it, made up: label i, fold k -> C = 0.5 + 0.05 i + 0.01 k."""
    return pd.DataFrame([{"label": label, "experiment": experiment, "cohort": cohort, "fold": k,
                          "c_index": 0.5 + 0.05 * i + 0.01 * k}
                         for i, (label, experiment) in enumerate(published.MODELS.items())
                         for cohort in cohorts for k in range(folds)], columns=published.COLUMNS)


def test_paper_caption_says_what_the_protocol_does():
    caption = analysis.cindex_table(analysed({"mcat": 1.0, "snn": 0.5}, protocol="paper", data="tcga", folds=3)).caption
    assert "bins cut on the whole cohort including the scored fold" in caption and "the last epoch scored" in caption
    assert "whole cohort" not in analysis.cindex_table(analysed({"mcat": 1.0, "snn": 0.5}, folds=3)).caption
    # CMTA's per-cohort alpha, chosen on these splits' val folds, is labelled where the paper protocol keeps it
    paper = analysis.cindex_table(analysed({"cmta": 1.0, "snn": 0.5}, protocol="paper", data="tcga", folds=3)).caption
    nested = analysis.cindex_table(analysed({"cmta": 1.0, "snn": 0.5}, folds=3)).caption
    assert "CMTA keeps run.sh's per-cohort alpha" in paper and "alpha" not in nested


@pytest.mark.parametrize("protocol", ["nested", "paper"])
def test_published_rows_from_the_per_fold_files_under_any_protocol(protocol):
    """Beside quick-profile runs too (the frames' profile): the caption states the published protocol instead."""
    runs, preds = frames({"mcat": 1.0, "snn": 0.5}, cohorts=("blca", "luad"), protocol=protocol, data="tcga", folds=3)
    release = made_up_published(cohorts=("blca", "luad", "ucec"))
    res = analysis.analyse(runs, preds, n_boot=50, published=release)
    table = analysis.cindex_table(res)
    labels = [f"{name} — published (MCAT release)" for name in published.MODELS]
    assert table.rows == ["MCAT", "SNN", *labels]
    # the folds the runs have (0-2), the cohorts the table has: AMIL (i = 1) 0.55, 0.56, 0.57
    mu, sd, bold, worse = table.cells[(labels[1], "luad")]
    assert (mu, sd) == pytest.approx((0.56, np.std([0.55, 0.56, 0.57]))) and not (bold or worse)
    assert table.overall[labels[1]] == pytest.approx(0.56) and labels[1] not in table.rank
    caption = table.caption
    assert "after the last (20th) epoch, bins cut on the whole cohort, one seed" in caption
    assert "not rerun here" in caption and "no patient-level predictions were released" in caption
    assert "Holm-corrected over those 16 comparisons as a family of their own" in caption
    assert "all 2 pairwise comparisons of our models in pairwise_tests.csv" in caption

    pw = res.pairwise
    assert pw["comparison"].value_counts().to_dict() == {"ours": 2, "published": 16}  # 2 cohorts x 2 ours x 4
    ours, theirs = pw[pw["comparison"] == "ours"], pw[pw["comparison"] == "published"]
    assert theirs[["cohort", "model_a", "model_b"]].values.tolist()[:5] == [
        ["blca", "mcat", "MCAT"], ["blca", "snn", "MCAT"], ["blca", "mcat", "AMIL"], ["blca", "snn", "AMIL"],
        ["blca", "mcat", "AMIL+SNN"]]
    assert theirs[["pooled_diff", "boot_ci_low", "boot_ci_high", "boot_p"]].isna().all().all()
    assert (theirs["n_folds"] == 3).all() and (theirs["df"] == 2).all()
    assert ours["holm_p"].tolist() == pytest.approx(stats.holm(ours["t_corrected_p"]).tolist())  # its own family
    assert theirs["holm_p"].tolist() == pytest.approx(stats.holm(theirs["t_corrected_p"]).tolist())
    mcat_blca = res.scores[(res.scores["model"] == "mcat") & (res.scores["cohort"] == "blca")]["c_index"].to_numpy()
    first = theirs.iloc[0]
    assert first["mean_diff"] == pytest.approx(np.mean(mcat_blca - [0.50, 0.51, 0.52]))


def test_published_rows_only_beside_tcga_runs_and_the_caption_says_how_to_get_them():
    synthetic = analysis.cindex_table(analysed({"mcat": 1.0, "snn": 0.5}, folds=3))
    assert not any("published" in r for r in synthetic.rows) and "bench.data fetch" not in synthetic.caption
    assert analysis.ORACLE in synthetic.rows and synthetic.cells[(analysis.ORACLE, "blca")][:2] == (0.75, 0.0)
    runs, preds = frames({"mcat": 1.0, "snn": 0.5}, data="tcga", folds=3)
    none_found = analysis.analyse(runs, preds, n_boot=50, published=made_up_published().iloc[:0])
    table = analysis.cindex_table(none_found)
    assert not any("published" in r for r in table.rows) and analysis.ORACLE not in table.rows
    assert "`python -m bench.data fetch --out <data root>` downloads them" in table.caption
    assert none_found.pairwise["comparison"].tolist() == ["ours"]


def test_paired_test_against_a_published_model_is_the_corrected_t_test_by_hand():
    """Our per-fold C (two seeds, averaged within a fold) against a published one on the same five folds."""
    ours = pd.DataFrame({"seed": [1] * 5 + [2] * 5, "fold": list(range(5)) * 2, "n_train": 80, "n_test": 20,
                         "c_index": [0.70, 0.64, 0.69, 0.61, 0.66, 0.68, 0.66, 0.65, 0.63, 0.62]})
    theirs = pd.DataFrame({"fold": range(5), "c_index": [0.62, 0.60, 0.66, 0.58, 0.65]})
    row = analysis.published_comparison(ours, theirs)
    d = np.array([0.69, 0.65, 0.67, 0.62, 0.64]) - theirs["c_index"].to_numpy()  # seed means minus published
    k = 5
    t = d.mean() / math.sqrt((1 / k + 20 / 80) * d.var(ddof=1))
    assert row["t_corrected_p"] == pytest.approx(2 * sps.t.sf(abs(t), k - 1), rel=1e-9)
    assert (row["n_folds"], row["n_seeds"], row["df"]) == (5, 2, 4.0) and row["mean_diff"] == pytest.approx(d.mean())
    assert row["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert all(math.isnan(row[c]) for c in ("pooled_diff", "boot_ci_low", "boot_ci_high", "boot_p"))


def test_a_cell_with_missing_folds_says_how_many_it_has(tmp_path):
    runs, preds = frames({"a": 1.0, "b": 0.5}, cohorts=("blca", "luad"), folds=5, n=40)
    gone = (runs["model"] == "b") & (runs["cohort"] == "luad") & (runs["fold"] == 3)
    res = analysis.analyse(runs[~gone], preds[~((preds["model"] == "b") & (preds["cohort"] == "luad") & (preds["fold"] == 3))],
                           n_boot=50)
    table = analysis.cindex_table(res)
    assert table.partial == {("b", "luad"): "4/5 folds"} and "k/n folds" in table.caption
    tables.write_table(table, tmp_path)
    csv = pd.read_csv(tmp_path / "cindex_table.csv").set_index("Model")
    assert csv.loc["b", "LUAD"].endswith(" (4/5 folds)") and "folds" not in csv.loc["b", "BLCA"] + csv.loc["a", "LUAD"]
    for name in ("cindex_table.md", "cindex_table.tex"):
        assert (tmp_path / name).read_text(encoding="utf-8").count("(4/5 folds)") == 1, name
    full = analysis.cindex_table(analysed({"a": 1.0, "b": 0.5}, folds=5, n=40))
    assert full.partial == {} and "k/n folds" not in full.caption


def test_report_refuses_runs_that_differ_in_a_setting_unless_allowed(tmp_path, capsys):
    """One job rerun in bf16 beside fp32 (here: unrecorded) runs: exit 2 naming the setting and the run;
    --allow-mixed builds the table and its caption lists the mix."""
    from mlflow.tracking import MlflowClient

    uri = populate_store(tmp_path, models=("abmil", "ghanet"), cohorts=("blca",), folds=3)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("synthetic-nested")
    (old,) = client.search_runs([exp.experiment_id], "tags.model = 'abmil' and tags.fold = '0' and tags.run_kind = 'fold'")
    rerun = client.create_run(exp.experiment_id, tags={**old.data.tags, "precision": "bf16"})
    path = tmp_path / PREDICTIONS_ARTIFACT
    client.download_artifacts(old.info.run_id, PREDICTIONS_ARTIFACT, str(tmp_path / "old"))
    (tmp_path / "old" / PREDICTIONS_ARTIFACT).replace(path)
    client.log_artifact(rerun.info.run_id, str(path))
    client.set_terminated(rerun.info.run_id)
    out = tmp_path / "results"

    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "differ in precision: bf16 (1 run, e.g. " + rerun.info.run_id + "), n/a (5 runs, e.g." in err
    assert "--allow-mixed" in err and not out.exists()

    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out), "--allow-mixed"]) == 0
    md = (out / "cindex_table.md").read_text(encoding="utf-8")
    assert f"Mixed settings (built with --allow-mixed): precision: bf16 (1 run, e.g. {rerun.info.run_id})" in md
    # the mix is abmil's alone: a table of the other model has none (the embedded default's report of its
    # five models was refused for extended models' runs at an older suite version in the same experiment)
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(tmp_path / "ghanet"), "--models", "ghanet"]) == 0
    assert "Mixed settings" not in (tmp_path / "ghanet" / "cindex_table.md").read_text(encoding="utf-8")
    assert store.mixed_settings(pd.DataFrame({"run_id": ["x", "y"], "precision": ["fp32", "fp32"]})) == []


def test_cohorts_differ_in_their_own_features_and_table_variant_without_a_mix():
    """Each cohort reads its own feature files (and may read `sig` where another reads `mutsig`): compared within
    a cohort only. Two feature sets inside one cohort are a mix."""
    runs = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "cohort": ["blca", "blca", "ucec", "ucec"],
                         "features_hash": ["h1", "h1", "h2", "h2"], "table_variant": ["sig", "sig", "mutsig", "mutsig"],
                         "precision": ["fp32"] * 4})
    assert store.mixed_settings(runs) == []
    runs.loc[3, "features_hash"] = "h3"
    assert store.mixed_settings(runs) == ["features_hash (ucec): h2 (1 run, e.g. c), h3 (1 run, e.g. d)"]
    runs.loc[3, "precision"] = "bf16"
    assert "precision: bf16 (1 run, e.g. d), fp32 (3 runs, e.g. a, b, c)" in store.mixed_settings(runs)


def test_a_table_mixing_split_files_within_a_fold_or_package_versions_is_a_mix():
    """Each fold of a cohort reads its own split file (no mix), but two models scored on other splits of the same
    fold are; and runs computed with other package versions (tags torch_version, version.<package>) are too."""
    runs = pd.DataFrame({"run_id": list("abcd"), "cohort": ["blca"] * 4, "fold": [0, 0, 1, 1],
                         "split_sha256": ["s0", "s0", "s1", "s1"], "version.numpy": ["2.4.6"] * 4,
                         "torch_version": ["2.13.0+cpu"] * 4})
    assert store.mixed_settings(runs) == []
    runs.loc[1, "split_sha256"] = "other"
    runs.loc[3, "version.numpy"] = "2.3.0"
    runs.loc[2, "torch_version"] = "2.13.0+cu128"
    assert store.mixed_settings(runs) == [
        "torch_version: 2.13.0+cpu (3 runs, e.g. a, b, d), 2.13.0+cu128 (1 run, e.g. c)",
        "version.numpy: 2.3.0 (1 run, e.g. d), 2.4.6 (3 runs, e.g. a, b, c)",
        "split_sha256 (blca fold 0): other (1 run, e.g. b), s0 (1 run, e.g. a)"]


def test_captions_name_the_suite_version_and_what_the_bootstrap_p_is():
    runs, preds = frames({"abmil": 1.0, "ghanet": 2.0}, n=30, folds=3)
    res = analysis.analyse(runs.assign(suite_version="0.1.0+code.abc"), preds, n_boot=200)
    caption = " ".join(analysis.cindex_table(res).caption.split())
    assert "suite version: 0.1.0+code.abc." in caption
    assert "conditional on the fitted fold models" in caption and "uncorrected for the number of comparisons" in caption
    assert "suite version: 0.1.0+code.abc." in analysis.calibration_caption(res)


def test_figures_exist_decode_and_have_fixed_pixel_sizes(tmp_path):
    res = analysed({"abmil": 1.0, "ghanet": 2.0, "snn": 0.2}, cohorts=("blca", "luad"), n=40, folds=3)
    files = figures.write_figures(res, tmp_path)
    assert sorted(p.name for p in (tmp_path / "km").iterdir()) == [
        f"{c}_{m}.png" for c in ("blca", "luad") for m in ("abmil", "ghanet", "snn")]
    assert sorted(p.name for p in (tmp_path / "calibration").iterdir()) == ["blca.png", "luad.png"]
    expected = {"fold_cindex.png": figures.FOLD_PLOT_SIZE, "ranks.png": figures.RANKS_SIZE,
                "km_grid.png": (figures.KM_CELL[0] * 3, figures.KM_CELL[1] * 2),
                **{f"calibration/{c}.png": (figures.CAL_CELL[0] * 3, figures.CAL_CELL[1] + 0.6) for c in ("blca", "luad")}}
    for path in files:
        w, h = expected.get(path.relative_to(tmp_path).as_posix(), figures.KM_SIZE)
        image = imread(path)
        assert image.shape[:2] == (round(h * figures.DPI), round(w * figures.DPI)), path.name
        assert image[..., :3].std() > 0.05  # something is drawn


def test_tables_and_csvs_are_byte_identical_on_rerun(tmp_path):
    res = analysed({"abmil": 1.0, "ghanet": 2.0}, n=30, folds=3)
    first = tables.write_table(analysis.cindex_table(res), tmp_path) + tables.write_csvs(res, tmp_path)
    before = {p.name: p.read_bytes() for p in first}
    again = analysed({"abmil": 1.0, "ghanet": 2.0}, n=30, folds=3)
    tables.write_table(analysis.cindex_table(again), tmp_path)
    tables.write_csvs(again, tmp_path)
    assert {p.name: p.read_bytes() for p in first} == before
    md = (tmp_path / "cindex_table.md").read_text(encoding="utf-8")
    assert "Protocol: nested; data: synthetic; folds: 3 (0, 1, 2); seeds: 1 (1); Optuna trials per job: 4" in md


def readme_of(tmp_path, runs: pd.DataFrame, preds: pd.DataFrame, published_rows=None, written=()) -> str:
    """The README `write_readme` writes for these frames into tmp_path (no figures: `written` names the files)."""
    res = analysis.analyse(runs, preds, n_boot=50, published=published_rows)
    readme.write_readme(tmp_path, [tmp_path / w for w in written], res, analysis.cindex_table(res), "exp-name",
                        "python -m bench.report --out results")
    return (tmp_path / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("data, models, caveat", [
    ("synthetic", ("abmil", "ghanet"), "Do not quote these numbers as TCGA results."),
    ("semisynthetic", ("abmil", "snn"), "The slide models' numbers are no evidence about real slides."),
    ("tcga", ("clinical", "snn"), "They are the floor a slide model must clear on these splits"),
    ("tcga", ("abmil", "snn"), "Slide models' numbers depend on the feature extractor")])
def test_readme_caveat_follows_the_data_tag_and_whether_a_model_reads_slides(tmp_path, data, models, caveat):
    text = readme_of(tmp_path, *frames(dict(zip(models, (1.0, 2.0))), n=30, folds=3, data=data))
    assert text.startswith(readme.MARKER) and f"**Caveat:** {caveat}" in text
    assert [k for k, (_, c) in {**readme.SHOWS, "no slides": readme.TCGA_NO_SLIDES}.items() if c in text] == [
        "no slides" if models[0] == "clinical" else data]
    assert (analysis.ORACLE in text) == (data == "synthetic")  # frames gives the oracle metric to synthetic runs


def test_readme_says_how_the_runs_were_made_from_their_own_times(tmp_path):
    """Summed job_seconds and the wall span from the first run's start to the last run's end, the suite versions
    the runs carry with their counts, the report's command; k/n folds and published rows explained where present."""
    runs, preds = frames({"abmil": 1.0, "ghanet": 2.0}, cohorts=("blca", "luad"), n=30, folds=3, data="tcga")
    start = 1_790_000_000_000  # 2026-09-21 14:13:20 UTC
    runs = runs.assign(start_time=start + 60_000 * np.arange(12), job_seconds=30.0, suite_version="0.1.0+code.a")
    runs["end_time"] = runs["start_time"] + 31_000
    runs.loc[0, "job_seconds"], runs.loc[1, "suite_version"] = np.nan, "0.1.0+code.b"
    gone = (runs["model"] == "ghanet") & (runs["cohort"] == "luad") & (runs["fold"] == 2)
    lost = (preds["model"] == "ghanet") & (preds["cohort"] == "luad") & (preds["fold"] == 2)
    text = " ".join(readme_of(tmp_path, runs[~gone], preds[~lost], made_up_published(("blca", "luad"))).split())
    assert ("**Compute:** 5 min 00 s summed over the runs' `job_seconds` (1 run logged none); by model: ABMIL 150 s, "
            "G-HANet 150 s.") in text
    assert ("**Wall time:** 10 min 31 s from the first run's start (2026-09-21 14:13 UTC) to the last run's end "
            "(2026-09-21 14:23 UTC)") in text  # the last run left is the 11th, started 600 s after the first
    assert "`0.1.0+code.a` (10 runs), `0.1.0+code.b` (1 run)" in text
    assert "the 11 fold runs of MLflow experiment `exp-name`" in text
    assert "**This report:** `python -m bench.report --out results`." in text
    assert "G-HANet on LUAD (2/3 folds)" in text
    assert "Rows marked published (MCAT release)" in text and "as a family of its own (16 comparisons)" in text


def test_readme_names_a_file_only_with_its_description_and_links_notes(tmp_path):
    runs, preds = frames({"abmil": 1.0, "ghanet": 2.0}, n=30, folds=3)
    with pytest.raises(BenchError, match="no description of new_table.csv"):
        readme_of(tmp_path, runs, preds, written=["new_table.csv"])
    assert "[NOTES.md](NOTES.md)" not in readme_of(tmp_path, runs, preds)
    (tmp_path / "NOTES.md").write_text("findings\n")
    (tmp_path / "paper-snn").mkdir()  # another report's folder: not this README's business
    text = readme_of(tmp_path, runs, preds, written=["km/blca_abmil.png", "km/blca_ghanet.png"])
    assert "[NOTES.md](NOTES.md)" in text and (tmp_path / "NOTES.md").read_text() == "findings\n"
    assert "- `km/blca_abmil.png`, `km/blca_ghanet.png`: per cohort and model" in text
    assert "paper-snn" not in text


# --------------------------------------------------------------------------- the command on a real store

def new_store(path) -> str:
    """An empty sqlite file in WAL mode (it persists in the file): MLflow's schema set-up then needs far
    fewer fsyncs, which on a slow disk takes this from about 10 s to about 3 s."""
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA journal_mode=WAL")
    return f"sqlite:///{path}"


def populate_store(root, models=("abmil", "ghanet"), cohorts=("blca", "luad"), folds=3, data="synthetic",
                   data_root: str | None = None) -> str:
    """A sqlite MLflow store laid out as bench.run writes it: parent runs with FINISHED fold children in the
    experiment `<data>-nested`, tagged `data_root` when given."""
    from mlflow.tracking import MlflowClient

    uri = new_store(root / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"{data}-nested", artifact_location=(root / "artifacts").as_uri(),
                                   tags={"mlflow.experimentKind": "custom_model_development"})
    for c, cohort in enumerate(cohorts):
        for m, model in enumerate(models):
            parent = client.create_run(exp, tags={RUN_KIND: "parent", "model": model, "cohort": cohort})
            for k, table in enumerate(fold_predictions(c, 30, folds, 1.0 + m, m)):
                run = client.create_run(exp, tags={
                    RUN_KIND: "fold", "mlflow.parentRunId": parent.info.run_id, "model": model, "cohort": cohort,
                    "fold": str(k), "protocol": "nested", "data": data, "seed": "1", "split_sha256": "0" * 64,
                    "git_commit": "test", "trials": "2", "profile": "quick",
                    **({"data_root": data_root} if data_root else {})})
                test = table[table["split"] == "test"]
                client.log_metric(run.info.run_id, "c_index", 0.6)
                client.log_metric(run.info.run_id, "oracle_c_index", 0.7 + 0.01 * k)
                client.log_metric(run.info.run_id, "ibs", 0.2 - 0.01 * m)  # as an older suite version logged it
                client.log_param(run.info.run_id, "bin_edges", edges_param(table))
                path = root / PREDICTIONS_ARTIFACT
                table.to_csv(path, index=False)
                client.log_artifact(run.info.run_id, str(path))
                client.set_terminated(run.info.run_id)
                assert len(test) == 10
            client.set_terminated(parent.info.run_id)
    unfinished = client.create_run(exp, tags={RUN_KIND: "fold", "model": "snn", "cohort": "blca", "fold": "0"})
    assert unfinished.info.status == "RUNNING"  # must be ignored: no predictions, no tags
    return uri


def test_report_cli_end_to_end_on_a_sqlite_store(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = populate_store(tmp_path)
    out = tmp_path / "results"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "-m", "bench.report", "--tracking-uri", uri, "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"browse the runs: {ui_command(uri)}\n" in done.stdout
    names = ["README.md", "cindex_table.csv", "cindex_table.md", "cindex_table.tex", "calibration_table.csv",
             "calibration_table.md",
             "cindex_summary.csv", "pairwise_tests.csv", "calibration_folds.csv", "calibration_groups.csv",
             "calibration/blca.png", "calibration/luad.png", "km_grid.png", "fold_cindex.png", "ranks.png"] + [f"km/{c}_{m}.png" for c in ("blca", "luad")
                                                                for m in ("abmil", "ghanet")]
    for name in names:
        assert (out / name).is_file(), name
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    text = (out / "README.md").read_text(encoding="utf-8")
    assert written == sorted(names) and all(f"`{name}`" in text for name in written)  # it names every file
    assert f"`python -m bench.report --tracking-uri {uri} --out {out}`" in text and "12 fold runs" in text
    table = pd.read_csv(out / "cindex_table.csv")
    assert table["Model"].tolist() == ["ABMIL", "G-HANet", analysis.ORACLE]
    assert table.loc[2, "BLCA"] == "0.710 ± 0.008"  # oracle_c_index 0.70, 0.71, 0.72
    # these runs logged an ibs metric and no Kaplan-Meier reference (an older suite version): every calibration
    # number comes from their predictions.csv and bin_edges, the same for all
    folds = pd.read_csv(out / "calibration_folds.csv")
    assert len(folds) == 12 and folds[["ibs", "ibs_km", "brier_skill", "dcal_p"]].notna().all().all()
    assert not np.isclose(folds.loc[folds["model"] == "ghanet", "ibs"], 0.19).any()  # not the logged metric
    calibration = pd.read_csv(out / "calibration_table.csv", keep_default_na=False).set_index("Model")
    ghanet = folds[(folds["model"] == "ghanet") & (folds["cohort"] == "luad")]["ibs"]
    assert calibration.loc["G-HANet", "LUAD IBS"] == f"{ghanet.mean():.3f} ± {ghanet.std(ddof=0):.3f}"
    assert calibration.loc[analysis.KM_LABEL, "LUAD BSS"] == "0"
    pairwise = pd.read_csv(out / "pairwise_tests.csv")
    assert pairwise[["cohort", "model_a", "model_b"]].values.tolist() == [["blca", "abmil", "ghanet"],
                                                                          ["luad", "abmil", "ghanet"]]
    assert pairwise[["t_corrected_p", "boot_p", "holm_p"]].apply(lambda s: s.between(0, 1)).all().all()
    before = {name: (out / name).read_bytes() for name in names}  # tables, and figures too (fixed jitter seed)

    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out)]) == 0  # rerun, in-process
    assert {name: (out / name).read_bytes() for name in before} == before

    (out / "NOTES.md").write_text("hand-written findings\n", encoding="utf-8")  # linked, never touched
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out)]) == 0
    assert "[NOTES.md](NOTES.md)" in (out / "README.md").read_text(encoding="utf-8")
    assert (out / "NOTES.md").read_text(encoding="utf-8") == "hand-written findings\n"
    hand = tmp_path / "hand"  # a README.md a person wrote is refused, before any work
    hand.mkdir()
    (hand / "README.md").write_text("# my findings\n", encoding="utf-8")
    capsys.readouterr()
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(hand)]) == 2
    assert "Move it to" in capsys.readouterr().err and sorted(p.name for p in hand.iterdir()) == ["README.md"]

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("synthetic-nested")
    reports = client.search_runs([exp.experiment_id], f"tags.{RUN_KIND} = 'report'")
    assert len(reports) == 3 and all(r.info.status == "FINISHED" for r in reports)
    logged = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert {"README.md", "cindex_table.csv", "pairwise_tests.csv", "km", "km_grid.png"} <= logged
    assert {a.path for a in client.list_artifacts(reports[0].info.run_id, "km")} == {
        f"km/{c}_{m}.png" for c in ("blca", "luad") for m in ("abmil", "ghanet")}

    # bad inputs: one paragraph, exit 2
    capsys.readouterr()
    assert cli_main(main)(["--tracking-uri", uri, "--experiment", "nope", "--out", str(out)]) == 2
    assert "'nope' is not in the MLflow store" in capsys.readouterr().err
    other = client.create_experiment("tcga-paper")
    stray = client.create_run(other, tags={RUN_KIND: "fold"})
    client.set_terminated(stray.info.run_id)
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "several experiments: synthetic-nested, tcga-paper" in err and "--experiment" in err
    assert cli_main(main)(["--tracking-uri", uri, "--experiment", "tcga-paper", "--out", str(out)]) == 2
    assert "lacks the tags" in capsys.readouterr().err
    mixed = client.create_run(exp.experiment_id, tags={
        RUN_KIND: "fold", "model": "snn", "cohort": "blca", "fold": "0", "protocol": "paper", "data": "synthetic",
        "seed": "1"})
    client.set_terminated(mixed.info.run_id)
    assert cli_main(main)(["--tracking-uri", uri, "--experiment", "synthetic-nested", "--out", str(out)]) == 2
    assert "mixes fold runs with protocol nested, paper" in capsys.readouterr().err


def write_release(folder, cohorts=("blca", "luad")) -> None:
    """Per-fold files in MCAT's format under `folder` (a folder of experiments), from `made_up_published`."""
    for (experiment, cohort), part in made_up_published(cohorts).groupby(["experiment", "cohort"]):
        path = published.summary_path(folder, experiment, cohort)
        path.parent.mkdir(parents=True, exist_ok=True)
        part.rename(columns={"fold": "folds", "c_index": "val_cindex"})[["folds", "val_cindex"]].to_csv(path)


def test_report_cli_on_tcga_runs_adds_the_release_from_the_runs_data_root_or_published(tmp_path, capsys):
    """Fold runs tagged data=tcga and data_root: the release under that root gives the published rows and the
    published comparisons; without it the caption says how to fetch it, and --published points elsewhere."""
    root = tmp_path / "tcga"
    write_release(root / "published" / "mcat")
    uri = populate_store(tmp_path, data="tcga", data_root=str(root))
    out = tmp_path / "results"
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out)]) == 0
    table = pd.read_csv(out / "cindex_table.csv").set_index("Model")
    labels = [f"{name} — published (MCAT release)" for name in published.MODELS]
    assert table.index.tolist() == ["ABMIL", "G-HANet", *labels]
    assert table.loc["SNN — published (MCAT release)", "BLCA"] == "0.660 ± 0.008"  # folds 0-2 of 0.65 + 0.01 k
    md = (out / "cindex_table.md").read_text(encoding="utf-8")
    assert "after the last (20th) epoch, bins cut on the whole cohort, one seed" in md
    text = " ".join((out / "README.md").read_text(encoding="utf-8").split())
    assert "**Rows marked published (MCAT release)**" in text and "under the nested protocol, so a difference" in text
    pairwise = pd.read_csv(out / "pairwise_tests.csv")
    mine = pairwise[pairwise["comparison"] == "ours"]
    assert mine[["cohort", "model_a", "model_b"]].values.tolist() == [["blca", "abmil", "ghanet"],
                                                                      ["luad", "abmil", "ghanet"]]
    theirs = pairwise[pairwise["comparison"] == "published"]
    assert len(theirs) == 2 * 2 * 4 and set(theirs["model_b"]) == set(published.MODELS)
    assert (theirs["n_folds"] == 3).all() and theirs["t_corrected_p"].between(0, 1).all()
    assert theirs["boot_p"].isna().all() and theirs["holm_p"].between(0, 1).all()

    shutil.rmtree(root / "published")
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out)]) == 0
    assert pd.read_csv(out / "cindex_table.csv")["Model"].tolist() == ["ABMIL", "G-HANet"]
    assert "`python -m bench.data fetch --out <data root>` downloads them" in (out / "cindex_table.md").read_text(
        encoding="utf-8")
    assert set(pd.read_csv(out / "pairwise_tests.csv")["comparison"]) == {"ours"}
    assert "**Published rows** (MCAT's released per-fold C on these splits) are missing" in (out / "README.md").read_text(
        encoding="utf-8")

    elsewhere = tmp_path / "release"  # a folder of experiments itself, as the shared copy is laid out
    write_release(elsewhere, cohorts=("blca",))
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out), "--published", str(elsewhere)]) == 0
    table = pd.read_csv(out / "cindex_table.csv", keep_default_na=False).set_index("Model")
    assert table.loc["MCAT — published (MCAT release)"].tolist()[:2] == ["0.510 ± 0.008", "n/a"]  # BLCA, LUAD
    capsys.readouterr()
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(out), "--published", str(tmp_path / "none")]) == 2
    assert "no MCAT per-fold file for blca, luad there" in " ".join(capsys.readouterr().err.split())


def test_report_cli_refuses_published_beside_synthetic_runs(tmp_path, capsys):
    uri = populate_store(tmp_path, cohorts=("blca",))
    assert cli_main(main)(["--tracking-uri", uri, "--out", str(tmp_path / "r"), "--published", str(tmp_path)]) == 2
    assert "compared with tcga runs only" in " ".join(capsys.readouterr().err.split())


def test_report_cli_refuses_missing_and_empty_stores(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    missing = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    assert cli_main(main)(["--tracking-uri", missing, "--out", str(tmp_path / "r")]) == 2
    assert "No MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    empty = new_store(tmp_path / "mlflow.db")
    MlflowClient(tracking_uri=empty).search_experiments()  # creates the store, with no runs at all
    assert cli_main(main)(["--tracking-uri", empty, "--out", str(tmp_path / "r")]) == 2
    assert "has no finished fold runs" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_only_models_keeps_the_asked_models_and_names_what_the_experiment_holds():
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "model": ["abmil", "snn", "coxnet"]})
    assert store.only_models(runs, ["abmil", "snn", "ghanet"])["run_id"].tolist() == ["a", "b"]
    with pytest.raises(BenchError, match="holds abmil, coxnet, snn"):
        store.only_models(runs, ["mcat"])


def test_every_registered_model_has_a_display_name():
    """A table row reads "MOTCat", never the registry key "motcat": a new model must name itself here."""
    from bench.report.analysis import DISPLAY
    from models import list_models
    assert set(list_models()) <= set(DISPLAY)
