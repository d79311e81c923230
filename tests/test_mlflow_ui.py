"""The real MLflow server over the sweep's store serves the runs and their C-index through its REST API.

This is what a user browsing with `mlflow ui` reads. Only 127.0.0.1 is contacted (proxies bypassed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from tests.test_run import SWEEP_EXPERIMENT, SWEEP_MODELS, closed_port, runs_of, swept

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(base: str, path: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with DIRECT.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.fixture
def server(tmp_path_factory, tmp_path):
    """`python -m mlflow server` on a free local port, up within 60 s; its process group is ended afterwards."""
    uri = swept(tmp_path_factory)["uri"]
    port = closed_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "artifacts")],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "mlflow server exited:\n" + (tmp_path / "server.log").read_text()[-3000:]
            try:
                with DIRECT.open(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer within 60 s"
            time.sleep(0.3)
        yield base, uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_server_lists_fold_runs_with_their_c_index(server):
    base, uri = server
    exp = call(base, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={SWEEP_EXPERIMENT}")["experiment"]
    assert {t["key"]: t["value"] for t in exp.get("tags", [])}.get("mlflow.experimentKind") == "custom_model_development"
    found = call(base, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp["experiment_id"]], "filter": "tags.run_kind = 'fold'", "max_results": 100})["runs"]
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
