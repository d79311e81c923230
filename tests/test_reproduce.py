"""`./reproduce.sh tabular` (bench.reproduce tabular): fetch from a mirror, sweep the slide-free models, report."""

from __future__ import annotations

import pandas as pd

from bench import reproduce
from bench.run import parse_args, settings_from_args
from tests.data.test_fetch import mirror  # noqa: F401  (the fixture: a mirror of ../shared/data)

SMALL = ["--cohorts", "ucec", "--folds", "0,1", "--trials", "1", "--epochs", "1", "--workers", "1"]


def test_the_tabular_settings_are_a_valid_sweep_of_the_slide_free_models(tmp_path, monkeypatch):
    """The committed real-table settings: nested, paper profile (SNN's epochs), 8 trials, variants pinned."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "tcga").mkdir(parents=True)
    settings, jobs, experiment, _ = settings_from_args(parse_args(reproduce.TABULAR_SWEEP))
    assert experiment == "tcga-nested" and settings.protocol == "nested" and settings.trials >= 8
    assert settings.profile.name == "paper" and not settings.reads_slides
    assert {j.model for j in jobs} == {"clinical", "clinical_coxnet", "coxnet", "snn"} and len(jobs) == 100
    assert settings.table_variants == {"blca": "sig", "brca": "mutsig", "gbmlgg": "mutsig", "luad": "sig",
                                       "ucec": "sig"}


def test_tabular_fetches_sweeps_and_reports(mirror, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, "TABULAR_SWEEP", reproduce.TABULAR_SWEEP + SMALL)
    monkeypatch.setattr(reproduce, "PAPER_SNN_SWEEP", reproduce.PAPER_SNN_SWEEP + SMALL)
    assert reproduce.main(["tabular", "--mirror", str(mirror)]) == 0
    out = tmp_path / reproduce.TABULAR_OUT
    table = pd.read_csv(out / "cindex_table.csv")
    assert {"Clinical Cox", "Clinical+CoxNet", "CoxNet", "SNN"} <= set(table.iloc[:, 0])
    assert any("published" in str(row) for row in table.iloc[:, 0])  # MCAT's released rows beside ours
    assert (out / "paper-snn" / "cindex_table.csv").is_file()
    pairwise = pd.read_csv(out / "pairwise_tests.csv")
    assert set(pairwise["comparison"]) == {"ours", "published"}
