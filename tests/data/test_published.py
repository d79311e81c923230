"""bench.data.published: MCAT's released per-fold C-indices read from ../shared/data, and malformed files refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.data import published
from bench.data.layout import COHORTS
from bench.errors import BenchError

RELEASE = "reference_results/mcat_iccv2021"  # SOURCES.md: MCAT results/ICCV/<experiment>/..., renamed per cohort


def test_the_shared_release_parses_into_five_folds_per_experiment_and_cohort(shared_data):
    table = published.read_published(shared_data / RELEASE)
    assert list(table.columns) == published.COLUMNS
    assert list(table["label"].unique()) == ["MCAT", "AMIL", "AMIL+SNN", "SNN"]
    assert set(table["experiment"]) == set(published.MODELS.values())
    assert table.groupby(["label", "cohort"])["fold"].apply(list).map(lambda f: f == [0, 1, 2, 3, 4]).all()
    assert len(table) == 4 * 5 * 5 and sorted(table["cohort"].unique()) == sorted(COHORTS)
    assert table["c_index"].between(0, 1).all()


def test_per_fold_means_and_population_stds_equal_the_released_cindex_csv(shared_data):
    """The report's published rows are computed from the per-fold files: they must give MCAT's own summary."""
    table = published.read_published(shared_data / RELEASE)
    for (label, experiment), part in table.groupby(["label", "experiment"]):
        summary = pd.read_csv(shared_data / RELEASE / experiment / "cindex.csv").set_index("Project")
        for cohort, fold_c in part.groupby("cohort")["c_index"]:
            assert round(fold_c.mean(), 4) == round(summary.loc[cohort, "Val C-Index (Mean)"], 4), (label, cohort)
            assert round(fold_c.std(ddof=0), 4) == round(summary.loc[cohort, "Val C-Index (STD)"], 4), (label, cohort)
    mcat_blca = table[(table["label"] == "MCAT") & (table["cohort"] == "blca")]["c_index"]
    assert round(mcat_blca.mean(), 4) == 0.6243  # the number the README and the paper's table quote


def test_a_data_root_holds_only_what_it_fetched(tmp_path, shared_data):
    folder = tmp_path / "root" / "published" / "mcat"
    experiment = published.MODELS["SNN"]
    (folder / experiment).mkdir(parents=True)
    source = shared_data / RELEASE / experiment / "summary_latest_tcga_luad.csv"
    published.summary_path(folder, experiment, "luad").write_bytes(source.read_bytes())
    assert published.folder_of(tmp_path / "root") == folder and published.folder_of(folder) == folder
    table = published.read_published(folder)
    assert table[["label", "cohort"]].drop_duplicates().values.tolist() == [["SNN", "luad"]]
    assert published.read_published(tmp_path / "empty").empty


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, problem", [
    (",folds,cindex\n" + "".join(f"{k},{k},0.6\n" for k in range(5)), "no column val_cindex"),
    (",folds,val_cindex\n" + "".join(f"{k},{k},0.6\n" for k in range(4)), "folds 0, 1, 2, 3 instead of 0-4"),
    (",folds,val_cindex\n" + "".join(f"{k},{k % 4},0.6\n" for k in range(5)), "folds 0, 1, 2, 3, 0 instead of 0-4"),
    (",folds,val_cindex\n" + "".join(f"{k},{k},{1.2 if k == 3 else 0.6}\n" for k in range(5)), "not all in [0, 1]"),
    (",folds,val_cindex\n" + "".join(f"{k},{k},{'' if k == 0 else 0.6}\n" for k in range(5)), "not all in [0, 1]"),
    ("", "not a readable CSV"),
], ids=["column", "four-folds", "repeated-fold", "above-1", "empty-value", "empty-file"])
def test_a_malformed_file_is_a_bencherror_naming_it_and_what_to_do(tmp_path, text, problem):
    path = write(published.summary_path(tmp_path, published.MODELS["MCAT"], "ucec"), text)
    with pytest.raises(BenchError) as info:
        published.read_published(tmp_path)
    msg = " ".join(str(info.value).split())
    assert str(path) in msg and problem in msg
    assert "python -m bench.data fetch --out <data root>" in msg


def test_a_well_formed_file_reads_in_fold_order(tmp_path):
    rows = "".join(f"{i},{k},{c}\n" for i, (k, c) in enumerate([(2, 0.7), (0, 0.5), (1, 0.6), (4, 0.9), (3, 0.8)]))
    path = write(published.summary_path(tmp_path, published.MODELS["AMIL"], "blca"), ",folds,val_cindex\n" + rows)
    table = published.read_summary(path)
    assert table["fold"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(table["c_index"], [0.5, 0.6, 0.7, 0.8, 0.9])
