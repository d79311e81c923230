"""The Ray executor: one Ray task per sweep job, on a private local Ray or on a cluster.

Each task runs the idempotent `run_job` itself (open, compute, close), so a retried attempt after
a process death resumes the dead attempt's fold run (same run id), fails the dead trial in the
job's own Optuna study and runs only the remaining budget. Ray retries process deaths
only (`retry_exceptions=False`); a Python error from bad input fails the job once, on its run.
Ray is an optional extra, imported here alone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from bench.data import DataRoot
from bench.errors import BenchError
from bench.jobs import CohortData, Job, JobResult, SweepSettings, load_cohort_data, parent_tags, run_job, setting_tags
from bench.splits import read_manifest
from bench.tracking import Tracker, store_dir
from bench.tune import check_storage

INSTALL_HINT = "pip install -e '.[ray]'"
JobProgress = Callable[[Job, str], None]


def import_ray():
    """Ray, with usage stats off unless the user chose otherwise; a clear error where it is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise BenchError(f"--executor ray needs Ray, an optional extra that is not installed here. Install it with "
                         f"`{INSTALL_HINT}` (pins ray==2.60.0) or run with --executor local.") from None
    return ray


def preflight(settings: SweepSettings, cohorts: list[str]) -> list[str]:
    """Problems a node would hit: the data root, each cohort's table and splits, the repo's split manifest."""
    root = settings.root
    problems = []
    if not root.root.is_dir():
        return [f"data root {root.root} is not there"]
    try:
        read_manifest()
    except (OSError, BenchError) as err:
        problems.append(f"split manifest unreadable ({err})")
    for c in cohorts:
        table = root.table(c, settings.table_variants.get(c))
        if not table.is_file():
            problems.append(f"missing {table}")
        problems += [f"missing {root.split(c, k)}" for k in range(5) if not root.split(c, k).is_file()]
        if settings.data == "tcga" and not root.features(c).is_dir():
            problems.append(f"missing features folder {root.features(c)}")
    return problems


def absolute(settings: SweepSettings) -> SweepSettings:
    root = settings.root
    features = root.features_dir.resolve() if root.features_dir else None
    return replace(settings, root=DataRoot(root.root.resolve(), features), optuna_dir=settings.optuna_dir.resolve())


def reach_cluster(address: str | None) -> None:
    """Refuse a Ray address where nothing listens: `ray.init` would wait on it for more than ten minutes.

    `address` is --ray-address (None: RAY_ADDRESS, else a private Ray: nothing to reach); `auto` is the
    cluster `ray start` last recorded on this machine; a `ray://` client address is left to Ray.
    """
    target = address or os.environ.get("RAY_ADDRESS")
    if not target or target == "local" or target.startswith("ray://"):
        return
    if target == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto")
        except Exception:  # Ray's own lookup; ray.init says the rest
            return
        if not target:
            return
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        raise BenchError(f"no Ray cluster answers at {target} (--ray-address {address or 'from RAY_ADDRESS'}: "
                         f"{getattr(err, 'strerror', None) or err}). Start one first (ray start --head --port PORT on the "
                         "head node, ray start --address HEAD:PORT on the others) and pass its head's HOST:PORT, or "
                         "leave --ray-address out for a private Ray on this machine.") from None


_CACHE: dict[tuple, object] = {}


def _cached(key: tuple, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def ray_job(job: Job, settings: SweepSettings, uri: str, experiment: str, job_progress: JobProgress | None) -> JobResult:
    """Body of one Ray task: resolve the device Ray gave it, then the same job function as the local executor."""
    import ray

    if settings.device == "auto":
        settings = replace(settings, device="cuda" if torch.cuda.is_available() else "cpu")
    tracker = _cached(("tracker", uri, experiment), lambda: _tracker(uri, experiment))
    try:
        cd: CohortData = _cached(("cohort", str(settings.root), settings.data, job.cohort,
                                  settings.table_variants.get(job.cohort)), lambda: load_cohort_data(settings, job.cohort))
    except Exception as err:  # the preflight passed, yet this node cannot load the cohort: the job fails, the sweep goes on
        return JobResult(job, "failed", reason=f"on {socket.gethostname()}: {type(err).__name__}: {err}")
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())
    # ray_node_id: which node ran the attempt, where nodes share a host name (several on one machine or pod host)
    extra_tags = {"executor": "ray", "node": socket.gethostname(), "ray_node_id": ray.get_runtime_context().get_node_id(),
                  "gpu_ids": gpus or "none", "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    progress = (lambda text: job_progress(job, text)) if job_progress else (lambda text: None)
    return run_job(job, settings, tracker, cd, progress, extra_tags)


TRACKER_WAIT_S = 240.0  # about as long as MLflow's own client retries a request (7 retries, backoff factor 2)


def _tracker(uri: str, experiment: str, wait: float = TRACKER_WAIT_S) -> Tracker:
    """The task's Tracker. The driver reached the store before any job, so a tracking server that does not
    answer now is down for a while (restarted, say): wait for it as MLflow's client waits mid-request, rather
    than fail the job at the first probe."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return Tracker(uri, experiment)
        except BenchError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


class RayExecutor:
    """Submits every job as a Ray task and reports results as they finish, in any order."""

    def __init__(self, address: str | None = None, gpus_per_job: float | None = None, cpus_per_job: float = 1.0,
                 max_retries: int = 2, job_progress: JobProgress | None = None, out=print):
        self.address = address
        self.gpus_per_job = gpus_per_job
        self.cpus_per_job = cpus_per_job
        self.max_retries = max_retries
        self.job_progress = job_progress
        self.out = out

    def run(self, jobs: list[Job], settings: SweepSettings, tracker: Tracker, cohorts: Callable[[str], CohortData],
            report: Callable[[JobResult], None], progress=None,
            notice: Callable[[Job, str], None] = lambda job, text: None) -> None:
        ray = import_ray()
        from ray.exceptions import RayError, RayTaskError

        if settings.optuna_storage:  # reached and its tables made once, before tasks that would race to make them
            check_storage(settings.optuna_storage)
        started_here = not ray.is_initialized()
        if started_here:
            reach_cluster(self.address)
            ray.init(address=self.address, include_dashboard=False, logging_level="WARNING", log_to_driver=True)
        # tasks may start in another working directory (or on another node): every path they get is absolute
        settings = absolute(settings)
        uri = f"sqlite:///{store_dir(tracker.uri) / Path(tracker.uri).name}" if tracker.uri.startswith("sqlite:///") else tracker.uri
        try:
            gpus = self._check_cluster(ray, settings, tracker, sorted({j.cohort for j in jobs}))
            # every parent run made here, before the tasks: tasks that created one at the same moment could each
            # keep their own, neither seeing the other's yet (seen twice in three runs of
            # tests/test_ray_executor.py on a busy machine: two parents of one model)
            for tags in {json.dumps(parent_tags(j, settings, cohorts(j.cohort)), sort_keys=True): 0 for j in jobs}:
                tracker.parent(json.loads(tags))
            task = ray.remote(ray_job).options(num_cpus=self.cpus_per_job, num_gpus=gpus, max_retries=self.max_retries,
                                               retry_exceptions=False)
            pending = {task.remote(job, settings, uri, tracker.experiment, self.job_progress): job for job in jobs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except RayTaskError as err:  # raised outside the job's own error handling: not retried
                    result = JobResult(job, "failed", reason=f"the Ray task raised {err.cause!r}")
                except RayError as err:  # retries used up: the process died every time
                    reason = (f"the Ray task's process died {self.max_retries + 1} time(s): "
                              f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
                    # the job's run, found by its settings (all but the device type, which only the task resolved)
                    tags = setting_tags(job, settings, cohorts(job.cohort))
                    del tags["device"]
                    tracker.fail_unfinished({"model": job.model, "cohort": job.cohort, "fold": str(job.fold),
                                             "seed": str(job.seed), **tags}, reason)
                    result = JobResult(job, "failed", reason=reason)
                if result.rerun_reason:
                    notice(job, result.rerun_reason)
                report(result)
        finally:
            if started_here:
                ray.shutdown()

    def _check_cluster(self, ray, settings: SweepSettings, tracker: Tracker, cohorts: list[str]) -> float:
        """Refuse what cannot work before any task starts; returns the GPUs per job to ask for."""
        nodes = [n for n in ray.nodes() if n["Alive"]]
        gpus = gpus_per_job(nodes, ray.get_runtime_context().get_node_id(), tracker.uri, self.gpus_per_job,
                            settings.device)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as strategy

        check = ray.remote(preflight)
        refs = {check.options(num_cpus=0, scheduling_strategy=strategy(n["NodeID"], soft=False)).remote(settings, cohorts):
                n["NodeManagerAddress"] for n in nodes}
        problems = [f"{refs[r]}: {p}" for r, found in zip(refs, ray.get(list(refs))) for p in found]
        if problems:
            raise BenchError(f"{len(problems)} problem(s) on the Ray cluster's nodes before any job: "
                             f"{'; '.join(problems[:10])}. Every node must see the same data root (a shared file "
                             "system) and have this project installed.")
        self.out(f"Ray: {len(nodes)} node(s), {sum(n['Resources'].get('CPU', 0) for n in nodes):g} CPUs, "
                 f"{sum(n['Resources'].get('GPU', 0) for n in nodes):g} GPUs; {self.cpus_per_job:g} CPU(s) and {gpus:g} "
                 f"GPU(s) per job, up to {self.max_retries} retries after a process death")
        return gpus


def gpus_per_job(nodes: list[dict], driver_node: str, uri: str, requested: float | None, device: str) -> float:
    """GPUs each task asks for, after refusing settings that would fail or hang on this cluster.

    `nodes` are `ray.nodes()` entries of live nodes. A local tracking store (sqlite file, folder) is
    refused once the cluster has a node besides the driver's: the other nodes cannot write it.
    """
    if store_dir(uri) is not None and any(n["NodeID"] != driver_node for n in nodes):
        raise BenchError(f"the Ray cluster has nodes other than this one, but the tracking store {uri} is a local "
                         "file the other nodes cannot write. Start an MLflow server on this node (mlflow server --host "
                         "0.0.0.0 --port 5000 --backend-store-uri sqlite:///mlruns/mlflow.db) and pass --tracking-uri "
                         "http://<this host>:5000.")
    most = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    gpus = (1.0 if most else 0.0) if requested is None else requested
    if gpus > 0 and most < min(gpus, 1):
        raise BenchError(f"--gpus-per-job {gpus:g} asks for GPUs, but no node of the Ray cluster has {min(gpus, 1):g} "
                         "GPU(s) free to give; the tasks would wait forever. Pass --gpus-per-job 0 to run on CPUs.")
    if device == "cuda" and gpus == 0:
        raise BenchError("--device cuda with no GPUs per job: Ray would hide every GPU from the tasks. Give each job "
                         "a GPU or a share of one (--gpus-per-job 0.5), or use --device cpu.")
    return gpus
