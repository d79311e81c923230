"""Saved fold models (bench.checkpoint) and `python -m bench.predict`: a reloaded model scores its own patients
as its job did, attention maps carry the h5 coordinates, and every bad input is one paragraph with exit 2.

One paper-protocol sweep (1 epoch, fold 0) of abmil, snn, mcat and ghanet on the session's tiny blca root.
"""

from __future__ import annotations

import io

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import checkpoint
from bench.data import DataRoot, open_cohort
from bench.data.layout import slide_stem
from bench.data.synth import synthesize
from bench.errors import BenchError
from bench.fold import OmicScaler
from bench.predict import ATTENTION_MAPS
from bench.predict import main as predict_main
from bench.run import main as run_main
from bench.survival import c_index
from bench.train import model_kwargs
from models import create_model
from tests.test_run import argv_for, runs_of, store_uri, tiny_root
from tests.test_train import OMIC_SIZES, tiny_set

EXPERIMENT = "predict"
MODELS = ("abmil", "snn", "mcat", "ghanet")
_SWEPT: dict = {}


def fold_runs(factory) -> dict:
    """Model -> its finished fold-0 run, saved with its model (the default)."""
    if not _SWEPT:
        code = run_main(argv_for(factory, EXPERIMENT, "--models", ",".join(MODELS), "--folds", "0", "--protocol",
                                 "paper", "--epochs", "1"))
        assert code == 0
        client = MlflowClient(store_uri(factory))
        _SWEPT.update({r.data.tags["model"]: r for r in runs_of(client, EXPERIMENT)})
    return _SWEPT


def score(factory, run_id: str, out, *extra: str, root=None) -> int:
    return predict_main(["--run-id", run_id, "--data-root", str(root or tiny_root(factory)), "--cohort", "blca",
                         "--tracking-uri", store_uri(factory), "--out", str(out), *extra])


@pytest.mark.parametrize("model", MODELS)
def test_a_saved_model_reloaded_reproduces_its_logged_c_index(model, tmp_path_factory, tmp_path):
    """Rescored from its saved files, the fold's test patients get the job's numbers: C-index equal, not close."""
    run = fold_runs(tmp_path_factory)[model]
    client = MlflowClient(store_uri(tmp_path_factory))
    assert score(tmp_path_factory, run.info.run_id, tmp_path / "p.csv") == 0
    pred = pd.read_csv(tmp_path / "p.csv", dtype={"case_id": str})
    test = pred[pred["split"] == "test"]
    assert c_index(test["time"], test["event"], test["risk"]) == run.data.metrics["c_index"]
    logged = pd.read_csv(client.download_artifacts(run.info.run_id, "predictions.csv", str(tmp_path)),
                         dtype={"case_id": str})
    pd.testing.assert_frame_equal(pred, logged)  # every patient of the fold, every column, as the run wrote them


@pytest.mark.parametrize("model", ["abmil", "ghanet", "mcat"])
def test_attention_csvs_hold_each_slides_patches_with_their_coords(model, tmp_path_factory, tmp_path):
    run = fold_runs(tmp_path_factory)[model]
    assert score(tmp_path_factory, run.info.run_id, tmp_path / "p.csv", "--attention", str(tmp_path / "att")) == 0
    root = DataRoot(tiny_root(tmp_path_factory))
    cohort = open_cohort(root, "blca")
    columns = {"abmil": ["attention"], "ghanet": ["attention", "hyperedge_tsg", "hyperedge_cgf"],
               "mcat": ["coattn_tsg", "coattn_cgf"]}[model]
    for case, slides in cohort.patients["slides"].items():
        maps = []
        for slide in slides:
            table = pd.read_csv(tmp_path / "att" / f"{slide_stem(slide)}.csv")
            with h5py.File(root.features("blca") / "h5_files" / f"{slide_stem(slide)}.h5", "r") as f:
                coords, n = f["coords"][:], len(f["features"])
            assert len(table) == n and table["patch"].tolist() == list(range(n))
            np.testing.assert_array_equal(table[["x", "y"]].to_numpy(), coords)
            maps.append(table)
        bag = pd.concat(maps)
        for col in columns:  # weights over the patient's whole bag, all slides
            assert bag[col].min() >= 0 and bag[col].sum() == pytest.approx(1.0, abs=1e-5), (case, col)


@pytest.mark.parametrize("name", sorted(ATTENTION_MAPS))
def test_every_attention_map_has_one_weight_per_patch(name):
    """On one bag of 7 patches every column is [7] and non-negative; softmax weights sum to 1 (MOTCat's
    unbalanced transport plan need not)."""
    model = create_model(name, path_dim=16, omic_sizes=OMIC_SIZES).eval()
    omics = [torch.randn(1, d) for d in OMIC_SIZES]
    with torch.no_grad():
        maps = ATTENTION_MAPS[name](model(wsi=torch.randn(1, 7, 16), mask=None, omics=omics).aux)
    assert maps
    for col, weights in maps.items():
        assert weights.shape == (7,) and bool((weights >= 0).all()), col
        if name != "motcat":
            assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5), col


def test_checkpoint_round_trip_is_exact_and_unpickles_nothing(tmp_path):
    train = tiny_set(n=12, seed=5)
    kwargs = model_kwargs("ghanet", train, {"dropout": 0.1})
    model = create_model("ghanet", **kwargs)
    scaler = OmicScaler([o * 3.3 + 1 for o in train.omics])
    groups = [[f"g{i}_{j}_rnaseq" for j in range(o.shape[1])] for i, o in enumerate(train.omics)]
    edges = np.array([0.0, 1.5, 7.25, 20.0, np.inf])
    scoring = {"micro_batch": 8, "max_tokens": None, "precision": "fp32", "feature_precision": "float32"}
    files = checkpoint.pack("ghanet", model, kwargs, edges, scaler, groups, {"dropout": 0.1}, scoring, 16, "v")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    saved = checkpoint.load(tmp_path)
    assert saved.model.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(saved.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert [m.tolist() for m in saved.model.recon_masks] == [list(map(bool, m)) for m in kwargs["recon_masks"]]
    for got, want in zip(saved.scaler.mean + saved.scaler.std, scaler.mean + scaler.std):
        assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want)
    np.testing.assert_array_equal(saved.edges, edges)
    assert (saved.omic_groups, saved.scoring, saved.feature_dim) == (groups, scoring, 16)

    buf = io.BytesIO()  # a weights file that would run code when unpickled is refused, not loaded
    torch.save({"w": torch.zeros(1), "obj": OmicScaler([np.ones((2, 2), np.float32)])}, buf)
    (tmp_path / checkpoint.WEIGHTS).write_bytes(buf.getvalue())
    with pytest.raises(BenchError, match="cannot be read"):
        checkpoint.load(tmp_path)


def _refused(factory, tmp_path, capsys, run_id: str, *extra: str, root=None) -> str:
    """Exit 2 with one paragraph; the --out file already there and the attention folder are untouched."""
    out = tmp_path / "p.csv"
    out.write_text("earlier results\n")
    capsys.readouterr()
    assert score(factory, run_id, out, "--attention", str(tmp_path / "att"), *extra, root=root) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert out.read_text() == "earlier results\n" and not (tmp_path / "att").exists()
    return " ".join(err.split())


@pytest.mark.parametrize("kind", ["parent", "report"])
def test_a_run_that_is_not_a_fold_run_is_refused(kind, tmp_path_factory, tmp_path, capsys):
    fold = fold_runs(tmp_path_factory)["abmil"]
    client = MlflowClient(store_uri(tmp_path_factory))
    if kind == "parent":
        run_id = fold.data.tags["mlflow.parentRunId"]
    else:
        run_id = client.create_run(fold.info.experiment_id, tags={"run_kind": "report"}).info.run_id
        client.set_terminated(run_id)
    err = _refused(tmp_path_factory, tmp_path, capsys, run_id)
    assert f"is a {kind} run, not a fold run" in err
    if kind == "parent":
        assert f"{fold.info.run_id} (fold 0)" in err  # names its fold runs


def test_an_unknown_run_id_is_refused(tmp_path_factory, tmp_path, capsys):
    fold_runs(tmp_path_factory)
    err = _refused(tmp_path_factory, tmp_path, capsys, "0123456789abcdef0123456789abcdef")
    assert "no run '0123456789abcdef0123456789abcdef' in the MLflow store" in err


def test_a_run_saved_without_its_model_is_refused(tmp_path_factory, tmp_path, capsys):
    assert run_main(argv_for(tmp_path_factory, "predict-no-models", "--models", "snn", "--folds", "0", "--protocol",
                             "paper", "--epochs", "1", "--no-save-models")) == 0
    client = MlflowClient(store_uri(tmp_path_factory))
    (run,) = runs_of(client, "predict-no-models")
    assert client.list_artifacts(run.info.run_id, checkpoint.ARTIFACT_DIR) == []
    err = _refused(tmp_path_factory, tmp_path, capsys, run.info.run_id)
    assert "holds no saved model" in err and "--no-save-models" in err and "--experiment NEW" in err


def test_features_of_another_width_are_refused(tmp_path_factory, tmp_path, capsys):
    other = tmp_path / "conch"
    synthesize(other, cohorts=["blca"], scale=0.06, min_test_events=0, log=lambda s: None, dim=512)
    run = fold_runs(tmp_path_factory)["abmil"]
    err = _refused(tmp_path_factory, tmp_path, capsys, run.info.run_id, root=other)
    assert "are 512 wide" in err and "trained on 1024-wide features" in err


def test_attention_of_a_model_without_it_is_refused(tmp_path_factory, tmp_path, capsys):
    err = _refused(tmp_path_factory, tmp_path, capsys, fold_runs(tmp_path_factory)["snn"].info.run_id)
    assert "the snn model of run" in err and "no per-patch attention" in err


def test_mlflow_tracking_uri_is_the_store_of_run_report_and_predict_without_tracking_uri(tmp_path_factory, tmp_path,
                                                                                        monkeypatch):
    """As MLflow's own tools do: without --tracking-uri, bench.run logs to, bench.report reads and bench.predict loads
    from MLFLOW_TRACKING_URI. Run from an empty folder, where the fallback store (mlruns/) would appear."""
    from bench.report import main as report_main

    uri = store_uri(tmp_path_factory)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    argv = argv_for(tmp_path_factory, "env-uri", "--models", "snn", "--folds", "0", "--protocol", "paper",
                    "--epochs", "1")
    at = argv.index("--tracking-uri")
    assert run_main(argv[:at] + argv[at + 2:]) == 0
    (run,) = runs_of(MlflowClient(uri), "env-uri")
    assert report_main(["--experiment", "env-uri", "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "cindex_table.csv").is_file()
    assert predict_main(["--run-id", run.info.run_id, "--data-root", str(tiny_root(tmp_path_factory)), "--cohort",
                         "blca", "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) > 0 and not (tmp_path / "mlruns").exists()
