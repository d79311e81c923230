"""The real MLflow server over the sweep's store serves the runs and their C-index through its REST API.

This is what a user browsing with `mlflow ui` reads. Only 127.0.0.1 is contacted (proxies bypassed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.tracking import ui_command
from tests.test_run import SWEEP_EXPERIMENT, SWEEP_MODELS, closed_port, runs_of, swept

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(base: str, path: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with DIRECT.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def serving(argv: list[str], port: int, cwd, env: dict | None = None):
    """The MLflow server `argv` starts on `port`, up within 60 s; its process group is ended afterwards."""
    log_path = cwd / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "mlflow server exited:\n" + log_path.read_text()[-3000:]
            try:
                with DIRECT.open(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            log_tail = log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"mlflow server did not answer within 60 s:\n{log_tail}"
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def server(tmp_path_factory, tmp_path):
    """`python -m mlflow server` over the shared sweep's store on a free local port."""
    uri = swept(tmp_path_factory)["uri"]
    port = closed_port()
    with serving([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                  "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "artifacts")],
                 port, tmp_path) as base:
        yield base, uri


def fold_runs_served(base: str) -> list[dict]:
    exp = call(base, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={SWEEP_EXPERIMENT}")["experiment"]
    return call(base, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment_id"]], "filter": "tags.run_kind = 'fold'", "max_results": 100})["runs"]


def test_the_printed_ui_command_serves_the_store_from_any_folder_without_the_venv(tmp_path_factory, tmp_path,
                                                                                monkeypatch):
    """`ui_command` of a relative store URI, run as printed from another folder with a PATH that holds no
    `mlflow` and no venv: the server shows the sweep's four fold runs, and no empty store appears where it ran."""
    db = Path(swept(tmp_path_factory)["uri"].removeprefix("sqlite:///"))
    monkeypatch.chdir(db.parent.parent)
    command = ui_command(f"sqlite:///{db.parent.name}/{db.name}")
    assert command.startswith(shlex.quote(sys.executable) + " -m mlflow ui ") and "--port 5000 " in command
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["PATH"] = "/usr/bin:/bin"
    assert shutil.which("mlflow", path=env["PATH"]) is None
    with serving(shlex.split(command.replace("--port 5000", f"--port {port}")), port, elsewhere, env) as base:
        runs = fold_runs_served(base)
    assert len(runs) == 4 and all(r["info"]["status"] == "FINISHED" for r in runs)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["server.log"]
    assert ui_command("http://127.0.0.1:5000") is None


def test_server_lists_fold_runs_with_their_c_index(server):
    base, uri = server
    exp = call(base, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={SWEEP_EXPERIMENT}")["experiment"]
    assert {t["key"]: t["value"] for t in exp.get("tags", [])}.get("mlflow.experimentKind") == "custom_model_development"
    found = fold_runs_served(base)
    served = {}
    for run in found:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert run["info"]["status"] == "FINISHED"
        served[(tags["model"], tags["fold"])] = metrics["c_index"]
    assert sorted(served) == [(m, f) for m in SWEEP_MODELS for f in ("0", "1")]
    direct = {(r.data.tags["model"], r.data.tags["fold"]): r.data.metrics["c_index"]
              for r in runs_of(MlflowClient(uri), SWEEP_EXPERIMENT)}
    assert served == direct
    assert all(0.0 <= c <= 1.0 for c in served.values())
