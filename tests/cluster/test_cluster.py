"""The `cluster` tier: a Ray sweep on real parts, every one started here on 127.0.0.1 and stopped after.

PostgreSQL (Debian's server), an MLflow tracking server on it serving artifacts from a folder, Optuna's
storage on the same PostgreSQL, and a Ray cluster of two nodes on this machine (a head and a worker, each
its own raylet and temp dir, one CPU). A sweep of four cheap jobs (snn and coxnet on the tiny synthetic
blca, folds 0 and 1, 1 trial, 1 epoch) runs through the CLI with `--executor ray --ray-address <head>
--tracking-uri http://... --optuna-storage postgresql://...`. Its first trial on the worker node waits
(tests/cluster/driver.py), and then the worker node is killed (kill -9 of all its processes) and so is
the tracking server, which is restarted on its port at once. The sweep must finish on the head with one
FINISHED fold run per job, the killed job resuming its own run and study, and give the numbers of the
same sweep run locally; the report and `bench.predict` then read through the server.

One set of parts and one sweep for the module; the tests after the first read what it left.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from bench.errors import cli_main
from bench.predict import main as predict_main
from bench.report import main as report_main
from bench.run import main as run_main
from tests.cluster.parts import (MEASURED, RAY_ENV, REPO, Missing, MlflowServer, Postgres, RayNode, free_port,
                                 kill_group, spawn, tail, wait_for)
from tests.test_run import tiny_root

pytestmark = pytest.mark.cluster

SWEEP = ["--models", "snn,coxnet", "--cohorts", "blca", "--folds", "0,1", "--trials", "1", "--epochs", "1",
         "--seed", "1"]
JOBS = {(m, f) for m in ("snn", "coxnet") for f in ("0", "1")}
EXPERIMENT = "cluster"
TABLES = ("cindex_table.csv", "cindex_table.md", "cindex_table.tex", "calibration_table.csv", "calibration_table.md",
          "cindex_summary.csv", "pairwise_tests.csv")
ENV = {**os.environ, **RAY_ENV, "MLFLOW_DISABLE_TELEMETRY": "true"}


def bench_cli(module: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", module, *argv]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]' (./reproduce.sh test does)")
    work = tmp_path_factory.mktemp("cluster")
    root = tiny_root(tmp_path_factory)
    local_uri = f"sqlite:///{work / 'local' / 'mlflow.db'}"
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            pg = Postgres()
        except Missing as err:
            pytest.skip(f"the cluster tier needs a part this machine lacks: {err}")
        stack.callback(pg.stop)
        ray_tmp = Path(tempfile.mkdtemp(prefix="ghanet-ray-"))  # short: Ray's socket paths live under it
        stack.callback(shutil.rmtree, ray_tmp, ignore_errors=True)

        # the same sweep run locally, meanwhile: the reference numbers, then its report
        local_log = work / "local.log"
        local = spawn(bench_cli("bench.run", "--data-root", str(root), "--tracking-uri", local_uri, "--experiment",
                                "local", "--workers", "1", *SWEEP), local_log, cwd=work, env=ENV)
        stack.callback(kill_group, local)

        pg.start()
        server = MlflowServer(pg.create_database("mlflow"), work / "artifacts", work / "mlflow-server.log")
        stack.callback(server.kill)
        server.launch()
        optuna_url = pg.create_database("optuna")
        head = RayNode(ray_tmp / "head")
        stack.callback(head.kill)
        head.start()
        worker = RayNode(ray_tmp / "worker", head=head.address)
        stack.callback(worker.kill)
        worker.start()
        server.wait()
        MEASURED["parts started (PostgreSQL, MLflow server, Ray head and worker)"] = time.monotonic() - t0

        assert local.wait(timeout=300) == 0, "the local sweep failed" + tail(local_log)
        local_report = spawn(bench_cli("bench.report", "--tracking-uri", local_uri, "--experiment", "local", "--out",
                                       str(work / "report-local")), work / "local-report.log", cwd=work, env=ENV)
        stack.callback(kill_group, local_report)
        yield SimpleNamespace(work=work, root=root, pg=pg, server=server, optuna=optuna_url, head=head, worker=worker,
                              local_uri=local_uri, local_report=local_report, swept={})
    MEASURED["cluster tier, parts up to parts down"] = time.monotonic() - t0


def fold_runs(uri: str, experiment: str, view=ViewType.ACTIVE_ONLY) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.run_kind = 'fold'", run_view_type=view, max_results=1000)


def by_job(runs) -> dict:
    jobs = defaultdict(list)
    for r in runs:
        jobs[(r.data.tags["model"], r.data.tags["fold"])].append(r)
    return dict(jobs)


def trial_states(url: str, study: str) -> list[str]:
    try:
        return [t.state.name for t in optuna.load_study(study_name=study, storage=url).trials]
    except KeyError:  # not created yet
        return []


def test_a_sweep_survives_a_lost_node_and_a_tracking_server_restart(cluster):
    c = cluster
    held = c.work / "held"
    held.mkdir()
    log = c.work / "cluster-sweep.log"
    argv = [sys.executable, str(REPO / "tests" / "cluster" / "driver.py"), "--hold-node", c.worker.node_id,
            "--hold-dir", str(held), "--", "--data-root", str(c.root), "--experiment", EXPERIMENT, *SWEEP,
            "--executor", "ray", "--ray-address", c.head.address, "--tracking-uri", c.server.uri,
            "--optuna-storage", c.optuna]
    t0 = time.monotonic()
    driver = spawn(argv, log, cwd=c.work, env=ENV)
    try:
        wait_for(lambda: any(held.iterdir()), 240, "a job's first trial on the worker node", driver, log)
        model, fold = next(held.iterdir()).name.split("-")
        running = by_job(fold_runs(c.server.uri, EXPERIMENT)).get((model, fold), [])
        assert [r.info.status for r in running] == ["RUNNING"], running
        dead_run = running[0]
        study = f"{model}_blca_fold{fold}_seed1_{dead_run.data.tags['job_key']}"
        assert trial_states(c.optuna, study) == ["RUNNING"]
        assert dead_run.data.tags["ray_node_id"] == c.worker.node_id

        t_kill = c.worker.kill()
        c.server.kill()
        c.server.launch()
        wait_for(lambda: c.worker.node_id not in c.head.alive_nodes(), 120, "the head declaring the worker dead",
                 driver, log, every=0.2)
        MEASURED["lost node: kill -9 to the head declaring it dead"] = time.monotonic() - t_kill
        c.server.wait()
        MEASURED["tracking server: kill -9 to answering again after its restart"] = time.monotonic() - t_kill
        wait_for(lambda: len(trial_states(c.optuna, study)) >= 2, 300, "the killed job's retry starting a trial",
                 driver, log, every=0.2)
        # behind the jobs queued on the head's one CPU, and the server's restart
        MEASURED["lost node: kill -9 to its job's retry running its next trial on the head"] = time.monotonic() - t_kill
        code = driver.wait(timeout=400)
        MEASURED["lost node: kill -9 to the end of the sweep"] = time.monotonic() - t_kill
    finally:
        kill_group(driver)
    MEASURED["cluster sweep (4 jobs), start to end"] = time.monotonic() - t0
    assert code == 0, "the cluster sweep failed" + tail(log, 60)

    runs = by_job(fold_runs(c.server.uri, EXPERIMENT, ViewType.ALL))  # deleted runs too: nothing was replaced
    assert set(runs) == JOBS
    assert {job: [r.info.status for r in rs] for job, rs in runs.items()} == {job: ["FINISHED"] for job in JOBS}
    (final,) = runs[(model, fold)]
    assert final.info.run_id == dead_run.info.run_id, "the retry did not resume the killed attempt's run"
    assert final.data.tags["ray_node_id"] == c.head.node_id
    states = trial_states(c.optuna, study)  # the killed trial failed by the retry, then the one trial of the budget
    assert states[0] == "FAIL" and states[1:] in (["COMPLETE"], ["PRUNED"]), states
    studies = {s.study_name for s in optuna.get_all_study_summaries(c.optuna)}
    assert len(studies) == len(JOBS) and study in studies, studies  # one study per job, the retry reused its own
    parents = MlflowClient(c.server.uri).search_runs(
        [MlflowClient(c.server.uri).get_experiment_by_name(EXPERIMENT).experiment_id], "tags.run_kind = 'parent'")
    assert sorted(p.data.tags["model"] for p in parents) == ["coxnet", "snn"]
    c.swept.update(runs={job: rs[0] for job, rs in runs.items()}, held=(model, fold))
    MEASURED["job killed with its node"] = f"{model} blca fold {fold}"


def predictions(uri: str, run_id: str, folder: Path) -> bytes:
    return Path(MlflowClient(uri).download_artifacts(run_id, "predictions.csv", str(folder))).read_bytes()


def test_the_cluster_sweep_gives_the_local_sweeps_numbers(cluster, tmp_path):
    runs = cluster.swept.get("runs") or pytest.fail("the cluster sweep did not finish")
    local = {job: rs[0] for job, rs in by_job(fold_runs(cluster.local_uri, "local")).items()}
    assert set(local) == JOBS
    c_index = {job: run.data.metrics["c_index"] for job, run in runs.items()}
    assert c_index == {job: run.data.metrics["c_index"] for job, run in local.items()}
    for job in sorted(JOBS):
        ours = predictions(cluster.server.uri, runs[job].info.run_id, tmp_path / "cluster" / "-".join(job))
        theirs = predictions(cluster.local_uri, local[job].info.run_id, tmp_path / "local" / "-".join(job))
        assert ours == theirs, f"predictions.csv of {job} differs between the cluster and the local sweep"


def comparable(path: Path, versions: dict[str, str]) -> bytes:
    """A report file as the comparison reads it: without run ids (each store has its own), and with the local
    sweep's suite version written as the cluster sweep's where the working tree changed between the two."""
    if path.suffix == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        return table.drop(columns=[c for c in table.columns if c == "run_id"]).to_csv(index=False).encode()
    data = path.read_bytes()
    for old, new in versions.items():
        data = data.replace(old.encode(), new.encode())
    return data


def test_the_report_through_the_server_writes_the_local_stores_tables(cluster):
    runs = cluster.swept.get("runs") or pytest.fail("the cluster sweep did not finish")
    out = cluster.work / "report-cluster"
    assert cli_main(report_main)(["--tracking-uri", cluster.server.uri, "--experiment", EXPERIMENT, "--out",
                                  str(out)]) == 0
    assert cluster.local_report.wait(timeout=300) == 0, tail(cluster.work / "local-report.log")
    local = cluster.work / "report-local"
    version = {r.data.tags["suite_version"] for r in runs.values()}
    versions = {r.data.tags["suite_version"]: min(version) for r in fold_runs(cluster.local_uri, "local")}
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert {str(p) for p in written} >= set(TABLES)
    for name in written:  # tables, their captions and the figures; README.md describes its own experiment
        if name.name != "README.md":  # (name, wall time, the command that wrote it)
            assert comparable(out / name, {}) == comparable(local / name, versions), name


def test_predict_loads_a_fold_model_through_the_server(cluster, tmp_path):
    runs = cluster.swept.get("runs") or pytest.fail("the cluster sweep did not finish")
    run = runs[cluster.swept["held"]]  # the job whose node died: its model was saved by the retry, on the head
    out = tmp_path / "p.csv"
    assert predict_main(["--run-id", run.info.run_id, "--data-root", str(cluster.root), "--cohort", "blca",
                         "--tracking-uri", cluster.server.uri, "--out", str(out)]) == 0
    scored = pd.read_csv(out, dtype={"case_id": str})
    logged = pd.read_csv(io.BytesIO(predictions(cluster.server.uri, run.info.run_id, tmp_path / "logged")),
                         dtype={"case_id": str})
    test = scored[scored["split"] == "test"].set_index("case_id")["risk"]
    want = logged[logged["split"] == "test"].set_index("case_id")["risk"]
    assert len(test) and test.sort_index().equals(want.sort_index())


def one_paragraph(err: str) -> str:
    assert "Traceback" not in err and err.strip(), err
    return " ".join(err.split())


def test_missing_parts_are_one_paragraph_before_any_job(cluster, capsys):
    base = ["--data-root", str(cluster.root), *SWEEP, "--experiment", "refused", "--executor", "ray"]
    closed = free_port()  # nothing listens there
    cases = {
        "tracking server": [*base, "--tracking-uri", f"http://127.0.0.1:{closed}"],
        "PostgreSQL": [*base, "--tracking-uri", cluster.server.uri, "--optuna-storage",
                       f"postgresql://postgres@127.0.0.1:{closed}/optuna"],
        "Ray cluster": [*base, "--tracking-uri", cluster.server.uri, "--ray-address", f"127.0.0.1:{closed}"],
    }
    hints = {"tracking server": "does not answer", "PostgreSQL": "cannot be reached", "Ray cluster": "no Ray cluster"}
    for part, argv in cases.items():
        t0 = time.monotonic()
        assert run_main(argv) == 2, part
        assert hints[part] in one_paragraph(capsys.readouterr().err), part
        assert time.monotonic() - t0 < 60, f"refusing a missing {part} took {time.monotonic() - t0:.0f} s"
    exp = MlflowClient(cluster.server.uri).get_experiment_by_name("refused")
    assert exp is None or not fold_runs(cluster.server.uri, "refused"), "a job started"
