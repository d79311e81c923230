"""`python -m bench.validate` end to end on tiny cohorts (and resumed), and `bench.validity`'s rules on known tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench import validity
from bench.validate import main


def tiny(tmp_path) -> list[str]:
    """The issue's command on 20-patient UCEC roots, two folds, 1 epoch and 1 trial: 32 jobs of about 0.4 s."""
    return ["--scenarios", "null", "--models", "snn,coxnet", "--replicates", "4", "--cohorts", "ucec",
            "--scale", "0.001", "--min-test-events", "0", "--dim", "8", "--patches-per-slide", "2-4",
            "--folds", "0,1", "--epochs", "1", "--trials", "1", "--power-events", "8",
            "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]


def test_validate_runs_the_null_scenario_end_to_end_and_a_rerun_resumes(tmp_path, capsys):
    assert main(tiny(tmp_path)) == 0
    out = tmp_path / "out"
    first = {p.name: p.read_bytes() for p in out.glob("*.csv") if p.name != "timings.csv"}
    timings = pd.read_csv(out / "timings.csv")
    assert timings["jobs_finished"].tolist() == [8] * 4 and timings["jobs_skipped"].sum() == 0

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("validate-null")
    runs = client.search_runs([exp.experiment_id], "tags.run_kind = 'fold' and attributes.status = 'FINISHED'")
    assert len(runs) == 32 and {r.data.tags["scenario"] for r in runs} == {"null"}
    assert sorted({r.data.tags["replicate"] for r in runs}) == ["0", "1", "2", "3"]

    table = pd.read_csv(out / "expected_vs_observed.csv")
    assert set(table["model"]) == {"snn", "coxnet", "oracle"} and (table["replicates"] == 4).all()
    assert table.loc[table["model"] != "oracle", "expected"].eq("0.5").all()
    rates = pd.read_csv(out / "false_positive_rate.csv")
    assert set(rates["null"]) == {"null scenario: model vs model", "model vs itself, another seed"}
    assert set(rates["test"]) == set(validity.TESTS) and set(rates["adjust"]) == {"raw", "holm"}
    per_null = rates.groupby("null")[["tests", "undefined"]].max().sum(axis=1)
    assert per_null.to_dict() == {"null scenario: model vs model": 4, "model vs itself, another seed": 8}
    assert pd.read_csv(out / "power.csv")["events_per_fold"].tolist() == [8]
    readme = (out / "README.md").read_text()
    assert "**R = 4**" in readme and "| null | **" in readme and validity.RULES["null"] in readme
    assert (out / "fpr_power.png").stat().st_size > 10_000

    capsys.readouterr()
    assert main(tiny(tmp_path)) == 0  # the rerun finds every job finished and reuses the roots
    printed = capsys.readouterr().out
    assert printed.count("0 jobs run, 8 already finished, 0 failed") == 4 and "writing null" not in printed
    assert pd.read_csv(out / "timings.csv")["jobs_skipped"].tolist() == [8] * 4
    assert {p.name: p.read_bytes() for p in out.glob("*.csv") if p.name != "timings.csv"} == first

    # the same finished study set beside itself as its own baseline: every paired difference 0 (to the 6 digits
    # replicate_scores.csv keeps), ranks kept
    again = [*tiny(tmp_path)[:-4], "--out", str(tmp_path / "again"), *tiny(tmp_path)[-2:], "--baseline", str(out)]
    assert main(again) == 0
    comparison = pd.read_csv(tmp_path / "again" / "budget_comparison.csv")
    assert set(comparison["model"]) == {"snn", "coxnet", "oracle"} and (comparison["replicates"] == 4).all()
    assert (comparison["difference"].abs() < 1e-6).all()
    ranked = comparison[comparison["model"] != "oracle"]
    assert ranked["rank_here"].tolist() == ranked["rank_there"].tolist() and comparison["rank_here"].isna().sum() == 1
    assert "## Budget sensitivity" in (tmp_path / "again" / "README.md").read_text()


@pytest.mark.parametrize("flags, words", [(["--scenarios", "nul"], "--scenarios"), (["--folds", "3"], "at least 2"),
                                          (["--prognostic-fraction", "2"], "prognostic fraction"),
                                          (["--baseline", "nowhere"], "no replicate_scores.csv")])
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, flags, words):
    assert main([*tiny(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err and not (tmp_path / "data").exists()


def reps(scenario: str, scores: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"scenario": scenario, "replicate": r, "model": m, "mean_c": c}
                         for m, values in scores.items() for r, c in enumerate(values)])


def test_budget_comparison_pairs_replicates_and_ranks_within_a_scenario():
    quick = reps("shared", {"abmil": [0.60, 0.62, 0.64], "transmil": [0.50, 0.52, 0.54], "oracle": [0.8, 0.8, 0.8]})
    longer = reps("shared", {"abmil": [0.61, 0.63, 0.65], "transmil": [0.70, 0.62, 0.66], "oracle": [0.8, 0.8, 0.8]})
    table = validity.budget_comparison(longer, quick).set_index("model")
    assert table.loc["abmil", "difference"] == pytest.approx(0.01)
    assert table.loc["abmil", "diff_low"] == pytest.approx(0.01) == table.loc["abmil", "diff_high"]  # no spread
    assert table.loc["transmil", "difference"] == pytest.approx(0.14)
    low, high = table.loc["transmil", ["diff_low", "diff_high"]]
    sd = np.std([0.20, 0.10, 0.12], ddof=1)
    assert low < 0.14 < high and high - low == pytest.approx(2 * 4.302653 * sd / np.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert (table.loc["transmil", "rank_there"], table.loc["transmil", "rank_here"]) == (2, 1)
    assert pd.isna(table.loc["oracle", "rank_here"])
    with pytest.raises(ValueError, match="share no"):
        validity.budget_comparison(longer, reps("null", {"abmil": [0.5]}))


def test_the_rules_judge_what_they_say():
    wsi, genes = [0.70, 0.72, 0.69, 0.71], [0.50, 0.52, 0.49, 0.51]
    oracle = {"oracle": [0.8] * 4}
    _, v = validity.expected_vs_observed(reps("histology", {"abmil": wsi, "ghanet": wsi, "snn": genes, **oracle}))
    assert v["histology"][0] == "PASS"
    _, v = validity.expected_vs_observed(reps("genomic", {"abmil": wsi, "snn": genes, **oracle}))
    assert v["genomic"][0] == "FAIL"
    table, v = validity.expected_vs_observed(reps("null", {"snn": genes, "abmil": wsi, **oracle}))
    assert v["null"][0] == "FAIL" and table.set_index("model")["holds"].to_dict() == {"abmil": False, "snn": True,
                                                                                      "oracle": None}
    _, v = validity.expected_vs_observed(reps("shared", {"snn": genes[:1], **{"oracle": [0.8]}}))
    assert v["shared"][0].startswith("not judged: needs 2")
    _, v = validity.expected_vs_observed(reps("histology", {"snn": genes, **oracle}))
    assert v["histology"][0] == "not judged: needs a WSI-only and a genomic-only model"
    assert validity.modality("ghanet") == "wsi" and validity.modality("coxnet") == "omics"
    assert validity.modality("mcat") == "other"


def test_a_model_against_an_identical_copy_never_rejects_and_rates_count_undefined_tests():
    rng = np.random.default_rng(0)
    n = 40
    fold = np.arange(n) % 5
    rows = [pd.DataFrame({"fold": k, "split": np.where(fold == k, "test", "train"), "case_id": [f"c{i:02d}" for i in range(n)],
                          "time": rng.uniform(1, 50, n).round(1), "event": rng.integers(0, 2, n),
                          "risk": rng.standard_normal(n)}) for k in range(5)]
    pred = pd.concat(rows, ignore_index=True)
    preds = pd.concat([pred.assign(seed=s) for s in (1, 2)]).assign(scenario="null", replicate=0, cohort="ucec",
                                                                    model="coxnet")
    pv = validity.seed_pair_pvalues(preds, n_boot=200)
    assert len(pv) == 1 and pv[list(validity.TESTS)].iloc[0].tolist() == [1.0, 1.0, 1.0]
    pv = pd.concat([pv, pv.assign(corrected_t=np.nan, corrected_t_holm=np.nan, wilcoxon=0.01, wilcoxon_holm=0.02)])
    rates = validity.rejection_rates(pv, []).set_index(["test", "adjust"])
    assert rates.loc[("corrected_t", "raw"), ["rejections", "tests", "undefined"]].tolist() == [0, 1, 1]
    assert rates.loc[("wilcoxon", "holm"), ["rejections", "tests", "rate"]].tolist() == [1, 2, 0.5]
    assert validity.wilson(0, 10)[0] == 0.0 and validity.wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
