"""MLflow tracking: where runs live, the fixed names every run carries, and resume.

One parent run per (model, cohort, seed, settings) and one child run per fold: one run per job.
A fold run starts RUNNING and is set FINISHED only after its metrics and `predictions.csv` are
logged, so a killed job never looks finished; a job whose FINISHED fold run exists (same job key)
is skipped on rerun, and an unfinished one (killed, failed) is resumed under the same run id.
A parent spans its folds: it starts with its first fold and ends with its latest finished fold.
The report reads only fold runs (tag `run_kind=fold`, status FINISHED).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.errors import BenchError

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
TRACKING_URI_DEFAULT = f"default: $MLFLOW_TRACKING_URI when set, else {DEFAULT_TRACKING_URI}"
TRACKING_URI_HELP = f"MLflow store ({TRACKING_URI_DEFAULT})"

RUN_KIND = "run_kind"            # tag: "parent" | "fold" | "report"
PREDICTIONS_ARTIFACT = "predictions.csv"
# tags of every fold run that define its result besides (model, cohort, fold, seed): a changed one reruns
# the job, and the report refuses a table whose runs differ in one
SETTING_TAGS = ("protocol", "data", "profile", "epochs", "grad_accum", "inner_val_fraction", "trials",
                "table_variant", "data_root", "features_dir", "features_width", "features_files", "features_hash",
                "precision", "device", "suite_version", "feature_precision", "cpu_threads", "micro_batch", "max_tokens")
# Of those, the ones that describe one cohort's inputs: a table's cohorts differ in them by nature (their own
# feature files; `sig` here, `mutsig` there), so the report asks them to agree within each cohort only.
COHORT_TAGS = ("table_variant", "features_dir", "features_files", "features_hash")
# the packages whose versions every fold run records (tags `version.<package>`, and `torch_version`): pinned in
# pyproject.toml, which the suite version hashes, so they enter the job key through it; the report checks the
# tags as well, since an environment can differ from its pins
VERSION_PACKAGES = ("numpy", "pandas", "scikit-survival", "optuna", "mlflow")
VERSION_TAGS = ("torch_version", *(f"version.{p}" for p in VERSION_PACKAGES))
JOB_KEY = "job_key"              # tag: hash of everything that defines a job's result
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3 opens the runs view


def default_tracking_uri() -> str:
    """The store a command uses without --tracking-uri: MLFLOW_TRACKING_URI when set, as MLflow's own tools read
    it, else the local sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def default_experiment(data: str, protocol: str) -> str:
    """Experiment name derived from the data source and protocol, e.g. `synthetic-nested`."""
    return f"{data}-{protocol}"


def store_dir(uri: str) -> Path | None:
    """Folder of a local store (sqlite file's folder or file store), where journals and artifacts go."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(uri.removeprefix("sqlite:///")).resolve().parent if uri.startswith("sqlite:///") else None
    if parsed.scheme in ("", "file"):
        return Path(parsed.path).resolve()
    return None


UI_PORT = 5000


def _served(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def ui_command(uri: str) -> str | None:
    """`mlflow ui` over this store as a shell line that works from any folder, with or without the venv active:
    this interpreter runs it (`python -m mlflow`, where `mlflow` alone may be off PATH or another install, and a
    venv's `bin/mlflow` names the interpreter it was installed with), and a local store is named by its absolute
    path (a relative one, run elsewhere, would make a new empty store). One server worker: one person browses, and
    MLflow's default of four took over a minute to answer on a loaded 2-core machine. None for a tracking server:
    it serves the UI itself."""
    if _served(uri):
        return None
    if uri.startswith("sqlite:///"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    elif (local := store_dir(uri)) is not None:
        uri = local.as_uri()
    return shlex.join([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                       "--port", str(UI_PORT), "--workers", "1"])


def runs_table_url(uri: str, experiment_id: str) -> str:
    """Where the experiment's runs table is: on a server its page, else the page `ui_command` serves."""
    base = uri.rstrip("/") if _served(uri) else f"http://127.0.0.1:{UI_PORT}"
    return f"{base}/#/experiments/{experiment_id}"


def browse_text(uri: str, experiment_id: str) -> str:
    """What the commands print last: how to open the runs in the MLflow UI, and the experiment's page there."""
    command = ui_command(uri)
    where = f"browse the runs: {command}\n" if command else ""
    return f"{where}the experiment's runs table: {runs_table_url(uri, experiment_id)}"


def check_store(uri: str) -> None:
    """A missing local store would silently be created empty by MLflow: refuse it instead."""
    if uri.startswith("sqlite:///"):
        path, exists = Path(uri.removeprefix("sqlite:///")), Path.is_file
    elif "://" not in uri or uri.startswith("file://"):
        path, exists = Path(uri.removeprefix("file://")), Path.is_dir
    else:
        return
    if not exists(path):
        raise BenchError(f"No MLflow store at {path} (tracking URI {uri}). Run `python -m bench.run` first, "
                         "or pass --tracking-uri naming the store that holds the runs.")


def describe(run) -> str:
    """`run ID (abmil blca fold 0 seed 1)` for messages."""
    t = run.data.tags
    what = " ".join(f"{k} {t[k]}" if k in ("fold", "seed") else t[k] for k in ("model", "cohort", "fold", "seed") if k in t)
    return f"run {run.info.run_id} ({what or 'no model tags'})"


def finished_fold_run(uri: str, run_id: str):
    """The FINISHED fold run `run_id` of the store at `uri` (any experiment); a clear error for any other run."""
    check_store(uri)
    if urlparse(uri).scheme in ("http", "https"):
        _probe_server(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise BenchError(f"no run {run_id!r} in the MLflow store {uri} ({err.message.splitlines()[0][:200]}). Copy a "
                         "fold run's id from the runs table (`mlflow ui`, a fold run's page shows it), and pass "
                         f"--tracking-uri naming the store the sweep logged to ({TRACKING_URI_DEFAULT}).") from None
    kind = run.data.tags.get(RUN_KIND)
    if kind != "fold":
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and "
                                      f"tags.{RUN_KIND} = 'fold' and attributes.status = 'FINISHED'", max_results=100)
        hint = ("Its finished fold runs: " + ", ".join(f"{r.info.run_id} (fold {r.data.tags.get('fold')})" for r in
                sorted(children, key=lambda r: r.data.tags.get("fold", ""))) + "." if children else
                "Pick a fold run (tag run_kind=fold): one per model, cohort, fold and seed.")
        raise BenchError(f"{describe(run)} is a {kind or 'untagged'} run, not a fold run: only a fold run holds a "
                         f"trained model. {hint}")
    if run.info.status != "FINISHED":
        raise BenchError(f"{describe(run)} is {run.info.status}, not FINISHED: a fold run saves its model only when its "
                         "job finishes. Rerun the sweep (python -m bench.run with the same arguments) to finish it.")
    return client, run


class Tracker:
    """Thin layer over MlflowClient: experiment set-up, job lookup, and run lifecycle."""

    def __init__(self, uri: str, experiment: str):
        self.uri = uri
        local = store_dir(uri)
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(sqlite3.connect(db)) as con:  # WAL: MLflow schema set-up 10 s -> 3 s here
                    con.execute("PRAGMA journal_mode=WAL")
            except (OSError, sqlite3.Error) as err:
                raise BenchError(f"the tracking store {uri} cannot be opened ({err}). Pass --tracking-uri with a "
                                 "writable sqlite:///path/mlflow.db or an http://host:port MLflow server.") from None
        if urlparse(uri).scheme in ("http", "https"):
            _probe_server(uri)
        self.client = MlflowClient(tracking_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                artifacts = (local / "artifacts" / experiment).as_uri() if local else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts, tags=EXPERIMENT_KIND)
            else:
                self.experiment_id = exp.experiment_id
        except BenchError:
            raise
        except Exception as err:  # connection refused, bad scheme, schema problems
            raise BenchError(f"the tracking store {uri} cannot be opened or reached ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:300]}). Check --tracking-uri ({TRACKING_URI_DEFAULT}); "
                             "for a server, start it first (mlflow server --host 127.0.0.1).") from None
        self.experiment = experiment

    def _search(self, filter_string: str) -> list:
        return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=50000)

    def finished_fold(self, job_key: str):
        runs = self._search(f"tags.{JOB_KEY} = '{job_key}' and attributes.status = 'FINISHED'")
        return runs[0] if runs else None

    def resume(self, job_key: str, tags: dict) -> str | None:
        """The job's latest unfinished fold run (left RUNNING by a dead attempt, KILLED or FAILED), set back
        to RUNNING with these tags, or None. A run that got params before it died is deleted instead: MLflow
        params cannot change, and the rerun may choose others."""
        runs = self._search(f"tags.{JOB_KEY} = '{job_key}' and attributes.status != 'FINISHED'")
        if not runs:
            return None
        run = max(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        if run.data.params:
            self.client.delete_run(run.info.run_id)
            return None
        if "failure_reason" in run.data.tags:
            self.client.delete_tag(run.info.run_id, "failure_reason")
        self.client.log_batch(run.info.run_id, tags=[mlflow.entities.RunTag(k, str(v)) for k, v in sorted(tags.items())])
        self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def latest_finished(self, tags: dict):
        """The latest FINISHED fold run whose tags equal these (any settings), or None."""
        where = " and ".join(f"tags.{k} = '{v}'" for k, v in sorted(tags.items()))
        runs = self._search(f"tags.{RUN_KIND} = 'fold' and {where} and attributes.status = 'FINISHED'")
        return max(runs, key=lambda r: (r.info.end_time or 0, r.info.run_id)) if runs else None

    def fail_unfinished(self, tags: dict, reason: str) -> int:
        """Mark the RUNNING fold runs with these tags FAILED (a job whose process died every time it ran)."""
        where = " and ".join(f"tags.{k} = '{v}'" for k, v in sorted(tags.items()))
        stale = self._search(f"tags.{RUN_KIND} = 'fold' and {where} and attributes.status = 'RUNNING'")
        for run in stale:
            self.end(run.info.run_id, "FAILED", reason)
        return len(stale)

    def parent(self, tags: dict) -> str:
        """The parent run for these settings, created on first use (by its first fold, so it starts with it).

        Jobs running at once (Ray tasks) may each create one: the earliest created stays, the others are
        deleted by their creators, and every job ends up under the same parent.
        """
        key = _digest(json.dumps(tags, sort_keys=True))
        where = f"tags.{RUN_KIND} = 'parent' and tags.parent_key = '{key}'"
        if not (runs := self._search(where)):
            mine = self.client.create_run(self.experiment_id, run_name=f"{tags['model']}/{tags['cohort']}",
                                          tags={**tags, RUN_KIND: "parent", "parent_key": key}).info.run_id
            self.client.set_terminated(mine)
            runs = self._search(where)
            if min(runs, key=_created).info.run_id != mine:
                self.client.delete_run(mine)
        return min(runs, key=_created).info.run_id

    def start_fold(self, parent_id: str, tags: dict, name: str) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={**tags, RUN_KIND: "fold", "mlflow.parentRunId": parent_id})
        return run.info.run_id

    def log_fold(self, run_id: str, params: dict, metrics: dict, tables: dict[str, pd.DataFrame]) -> None:
        self.client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
                              metrics=[mlflow.entities.Metric(k, float(v), 0, 0) for k, v in sorted(metrics.items())])
        with tempfile.TemporaryDirectory() as tmp:
            for name, df in tables.items():
                path = os.path.join(tmp, name)
                df.to_csv(path, index=False, lineterminator="\n", float_format="%.8g")
                self.client.log_artifact(run_id, path)

    def log_files(self, run_id: str, files: dict[str, bytes]) -> None:
        """Artifacts given as bytes by artifact path (`model/weights.pt`), e.g. a saved fold model."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                self.client.log_artifact(run_id, str(path), artifact_path=os.path.dirname(name) or None)

    def log_curve(self, run_id: str, key: str, values: list[float]) -> None:
        self.client.log_batch(run_id, metrics=[mlflow.entities.Metric(key, float(v), 0, i) for i, v in enumerate(values)])

    def log_metric(self, run_id: str, key: str, value: float) -> None:
        self.client.log_metric(run_id, key, float(value))

    def end(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self.client.set_tag(run_id, "failure_reason", reason[:5000])
        self.client.set_terminated(run_id, status=status)

    def update_parent(self, parent_id: str) -> None:
        """Mean and std (population) of the finished fold runs' C-index under this parent.

        Logged at step = folds finished and the current time: MLflow shows the value with the highest
        (step, timestamp, value), so a fixed step and timestamp would show the largest mean ever logged.
        """
        runs = self._search(f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'FINISHED'")
        latest = {}  # per fold: a run on another device type shares the parent; its latest run counts
        for r in sorted(runs, key=lambda r: (r.info.end_time or 0, r.info.run_id)):
            latest[r.data.tags.get("fold")] = r
        values = pd.Series([r.data.metrics.get("c_index") for r in latest.values()], dtype=float).dropna()
        if latest:  # the parent spans its folds: it ends with the latest one
            self.client.set_terminated(parent_id, end_time=max(r.info.end_time or 0 for r in latest.values()))
        if len(values):
            now, step = int(time.time() * 1000), len(values)
            self.client.log_batch(parent_id, metrics=[
                mlflow.entities.Metric("c_index_mean", float(values.mean()), now, step),
                mlflow.entities.Metric("c_index_std", float(values.std(ddof=0)), now, step),
                mlflow.entities.Metric("n_folds_finished", float(len(values)), now, step)])


def _probe_server(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds when a tracking server does not answer: MlflowClient retries for minutes first.

    Any HTTP answer (even an error status) means something listens; only a connection failure stops here.
    """
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise BenchError(f"the tracking server {uri} does not answer ({reason}). Start it first (mlflow server "
                         f"--host 127.0.0.1 --port PORT) or pass another --tracking-uri ({TRACKING_URI_DEFAULT}).") from None


def _created(run) -> tuple:
    return run.info.start_time, run.info.run_id


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]
