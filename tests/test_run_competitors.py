"""MOTCat and CMTA train and score through `bench.run` on synthetic data, with CMTA's reference SGD and alpha."""

import pytest
from mlflow.tracking import MlflowClient

from bench.run import main
from tests.test_run import argv_for, runs_of, store_uri

pytestmark = pytest.mark.slow


def test_motcat_and_cmta_sweep_under_the_paper_protocol(tmp_path_factory):
    argv = argv_for(tmp_path_factory, "competitors", "--protocol", "paper", "--models", "motcat,cmta",
                    "--folds", "0", "--epochs", "1", "--workers", "1")
    assert main(argv) == 0
    runs = {r.data.tags["model"]: r for r in runs_of(MlflowClient(store_uri(tmp_path_factory)), "competitors")}
    assert runs.keys() == {"motcat", "cmta"}
    for run in runs.values():
        assert run.info.status == "FINISHED" and 0 <= run.data.metrics["c_index"] <= 1
    cmta = runs["cmta"].data.params
    assert (cmta["optimizer"], float(cmta["lr"]), float(cmta["sim_alpha"])) == ("sgd", 1e-3, 1.0)  # blca's alpha
    assert "loss_aux" in runs["cmta"].data.metrics  # the L1 terms were trained on
    assert "optimizer" not in runs["motcat"].data.params  # Adam, the trainer's default
