"""A data root of real tables and splits without slide features: the slide-free models run, slide models are refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench.run import main, parse_models
from models import get_model_class
from models.registry import TABULAR_MODELS
from tests.test_run import artifact_csv, runs_of


def tables_only_root(shared: Path, root: Path, cohort: str = "ucec") -> Path:
    """The layout `bench.data fetch` writes, for one cohort, as links into ../shared/data: no features/ folder."""
    (root / "tables" / "sig").mkdir(parents=True)
    (root / "splits" / "5foldcv").mkdir(parents=True)
    (root / "signatures.csv").symlink_to(shared / "signatures.csv")
    (root / "splits" / "5foldcv" / f"tcga_{cohort}").symlink_to(shared / "splits" / "5foldcv" / f"tcga_{cohort}")
    name = f"tcga_{cohort}_all_clean.csv.zip"
    (root / "tables" / "sig" / name).symlink_to(shared / "tcga" / cohort / "sig" / name)
    return root


def _argv(root: Path, uri: str, models: str, *extra: str) -> list[str]:
    return ["--data", "tcga", "--data-root", str(root), "--tracking-uri", uri, "--experiment", "tabular",
            "--models", models, "--cohorts", "ucec", "--folds", "0", "--trials", "1", "--epochs", "1",
            "--workers", "1", *extra]


def test_tabular_selection_is_the_slide_free_floor():
    assert parse_models("tabular") == list(TABULAR_MODELS) == ["clinical", "clinical_coxnet", "coxnet", "snn"]
    for name in TABULAR_MODELS:
        cls = get_model_class(name)
        assert "wsi" not in cls.train_modalities | cls.infer_modalities, name


def test_tabular_models_run_on_the_real_ucec_tables_without_features(shared_data, tmp_path):
    root = tables_only_root(shared_data, tmp_path / "tcga")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(_argv(root, uri, "tabular")) == 0
    assert not (root / "features").exists()
    client = MlflowClient(uri)
    runs = {r.data.tags["model"]: r for r in runs_of(client, "tabular")}
    assert sorted(runs) == sorted(TABULAR_MODELS)
    split = pd.read_csv(shared_data / "splits" / "5foldcv" / "tcga_ucec" / "splits_0.csv")
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["features_dir"] == "none" and run.data.tags["feature_dim"] == "none"
        assert run.data.tags["table_variant"] == "sig"
        assert 0.5 < run.data.metrics["c_index"] < 1.0, name  # the real labels carry signal for every model
        pred = artifact_csv(client, run, "predictions.csv", tmp_path / name)
        assert sorted(pred.loc[pred["split"] == "test", "case_id"]) == sorted(split["val"].dropna())
    for name in ("clinical", "clinical_coxnet"):  # UCEC: two patients lack age; the count is on the run
        metrics = runs[name].data.metrics
        assert {"test_age_missing", "test_oncotree_code_unseen"} <= set(metrics)
        assert metrics["test_oncotree_code_unseen"] == 0
    # a rerun finds every job finished
    assert main(_argv(root, uri, "tabular")) == 0
    assert len(runs_of(client, "tabular")) == len(TABULAR_MODELS)


def test_a_slide_model_on_a_root_without_features_is_refused_before_any_job(shared_data, tmp_path, capsys):
    root = tables_only_root(shared_data, tmp_path / "tcga")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(_argv(root, uri, "abmil,snn,coxnet")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--models asks for abmil, which read slide features, but there are none for ucec" in err
    assert "--models tabular (clinical, clinical_coxnet, coxnet, snn)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists() or not runs_of(MlflowClient(uri), "tabular")


@pytest.mark.parametrize("column", ["oncotree_code", "age"])
def test_a_table_without_a_clinical_column_names_cohort_file_and_column(shared_data, tmp_path, capsys, column):
    root = tables_only_root(shared_data, tmp_path / "tcga")
    table = root / "tables" / "sig" / "tcga_ucec_all_clean.csv.zip"
    frame = pd.read_csv(table, compression="zip").drop(columns=column)
    table.unlink()
    frame.to_csv(table, index=False)  # plain text under the zip name, as the reader accepts
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(_argv(root, uri, "coxnet,clinical")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cohort ucec: the table {table} has no column {column}, which clinical reads" in err
    assert "Traceback" not in err
    assert not runs_of(MlflowClient(uri), "tabular")  # refused before any job: coxnet did not run either


def test_a_non_numeric_age_names_the_patient(shared_data, tmp_path, capsys):
    root = tables_only_root(shared_data, tmp_path / "tcga")
    table = root / "tables" / "sig" / "tcga_ucec_all_clean.csv.zip"
    frame = pd.read_csv(table, compression="zip")
    frame["age"] = frame["age"].astype(object)
    row = frame.drop_duplicates("case_id").index[3]  # a patient's first slide row: the one its covariates come from
    frame.loc[row, "age"] = "sixty"
    table.unlink()
    frame.to_csv(table, index=False)
    assert main(_argv(root, f"sqlite:///{tmp_path / 'mlflow.db'}", "clinical")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"'sixty' in column age for patient {frame.loc[row, 'case_id']}" in err
