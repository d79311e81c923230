"""The Ray executor on a real private Ray (2 CPUs, 2 fake GPUs): same results as local, retries, packing, resume.

One Ray for the module (starting it costs seconds). Never `ray stop`: it kills every Ray on the host.
The sweeps reuse `test_run`'s tiny synthetic root and sqlite store, one experiment per scenario.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from bench.errors import BenchError
from bench.jobs import Job
from bench.ray_executor import RayExecutor, gpus_per_job
from bench.run import main, parse_args, settings_from_args, sweep
from bench.tracking import Tracker
from tests.test_run import REPO, SWEEP_EXPERIMENT, SWEEP_MODELS, argv_for, runs_of, store_uri, swept

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def ray_cluster():
    for k, v in RAY_ENV.items():  # read when ray is first imported: keeps every Ray socket on 127.0.0.1
        os.environ.setdefault(k, v)
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]' (CI installs it)")
    ctx = ray.init(num_cpus=2, num_gpus=2, object_store_memory=100 * 1024**2, include_dashboard=False,
                   logging_level="WARNING", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tasks may call this module's helpers
    assert ctx.address_info["node_ip_address"] == "127.0.0.1", "Ray was imported before RAY_ENV was set"
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


def fold_runs(experiment: str, factory) -> list:
    return runs_of(MlflowClient(store_uri(factory)), experiment)


def c_by_job(runs) -> dict:
    return {(r.data.tags["model"], r.data.tags["fold"]): r.data.metrics["c_index"] for r in runs
            if r.info.status == "FINISHED"}


def test_ray_sweep_gives_the_local_sweeps_c_index(ray_cluster, tmp_path_factory):
    local = swept(tmp_path_factory)  # abmil, snn x blca x folds 0, 1 in two local worker processes, 1 thread each
    assert local["code"] == 0
    argv = argv_for(tmp_path_factory, "ray", "--models", ",".join(SWEEP_MODELS), "--folds", "0,1", "--executor", "ray")
    assert main(argv) == 0
    ray_runs = fold_runs("ray", tmp_path_factory)
    assert len(ray_runs) == 4 and {r.data.tags["executor"] for r in ray_runs} == {"ray"}
    # the cluster has (fake) GPUs, so by default each job holds one and Ray pins it; torch still sees none
    assert {r.data.tags["gpu_ids"] for r in ray_runs} <= {"0", "1"}
    assert {r.data.tags["device"] for r in ray_runs} == {"cpu"}
    assert c_by_job(ray_runs) == c_by_job(fold_runs(SWEEP_EXPERIMENT, tmp_path_factory))
    parents = runs_of(MlflowClient(store_uri(tmp_path_factory)), "ray", "parent")  # one per model, though tasks race
    assert sorted(p.data.tags["model"] for p in parents) == sorted(SWEEP_MODELS)
    assert all(p.data.metrics["n_folds_finished"] == 2 for p in parents)
    assert main(argv) == 0  # a rerun finds every job finished
    assert len(fold_runs("ray", tmp_path_factory)) == 4


def start_workers(n: int) -> None:
    """Leave n idle Ray workers that have imported the job code, so that n tasks submitted together start together."""
    import ray

    @ray.remote(num_cpus=1, num_gpus=0.5)
    def ready() -> int:
        import bench.jobs  # noqa: F401  (the import a job's first task pays)
        time.sleep(0.5)
        return os.getpid()

    assert len(set(ray.get([ready.remote() for _ in range(n)]))) == n


def test_half_gpu_jobs_share_one_device_at_once(ray_cluster, tmp_path_factory):
    start_workers(2)  # a cold worker starts seconds late, after the other tiny job has ended
    argv = argv_for(tmp_path_factory, "ray-packed", "--models", "abmil", "--folds", "0,1", "--executor", "ray",
                    "--gpus-per-job", "0.5")
    assert main(argv) == 0
    a, b = fold_runs("ray-packed", tmp_path_factory)
    assert a.data.tags["gpu_ids"] == b.data.tags["gpu_ids"] != "none"
    assert a.data.tags["cuda_visible_devices"] == a.data.tags["gpu_ids"]
    assert a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time, "the two jobs did not overlap"


def die_in_second_trial(marker: Path, job: Job, text: str) -> None:
    """Runs inside the task: kill the worker process once, mid-way through the second trial."""
    if text.startswith("trial 2/") and not marker.exists():
        marker.touch()
        os._exit(1)


def test_a_process_death_is_retried_and_resumes_at_trial_level(ray_cluster, tmp_path_factory, tmp_path):
    argv = argv_for(tmp_path_factory, "ray-retry", "--models", "snn", "--folds", "0", "--executor", "ray")
    settings, jobs, experiment, uri = settings_from_args(parse_args(argv))
    marker = tmp_path / "died"
    executor = RayExecutor(gpus_per_job=0, max_retries=2, job_progress=functools.partial(die_in_second_trial, marker),
                           out=lambda s: None)
    (result,) = sweep(settings, jobs, Tracker(uri, experiment), executor=executor, out=lambda s: None)
    assert marker.exists(), "the job never reached its second trial"
    assert result.status == "finished"
    runs = fold_runs("ray-retry", tmp_path_factory)  # the dead attempt's run, resumed by the retry
    assert len(runs) == 1, [(r.info.status, r.data.tags["job_key"], r.data.tags["suite_version"]) for r in runs]
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["executor"] == "ray"
    (journal,) = (settings.optuna_dir).glob("snn_blca_fold0_*.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (study,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    states = [t.state.name for t in trials]
    # trial 0 not repeated, the dead trial FAIL, one more trial run: exactly 2 counted (COMPLETE or PRUNED)
    assert states[:2] == ["COMPLETE", "FAIL"] and len(states) == 3 and states[2] in ("COMPLETE", "PRUNED"), states


def test_a_killed_driver_is_rerun_without_repeating_finished_jobs(ray_cluster, tmp_path_factory, tmp_path):
    argv = argv_for(tmp_path_factory, "ray-driver", "--models", "snn", "--folds", "0,1,2", "--executor", "ray",
                    "--ray-address", ray_cluster, "--gpus-per-job", "0")
    with open(tmp_path / "log.txt", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.run", *argv], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **RAY_ENV})
        try:
            deadline = time.monotonic() + 120
            while not any(r.info.status == "FINISHED" for r in fold_runs("ray-driver", tmp_path_factory)):
                assert proc.poll() is None, "the sweep ended before it could be killed:\n" + (tmp_path / "log.txt").read_text()
                assert time.monotonic() < deadline, "no job finished within 120 s"
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = {r.info.run_id for r in fold_runs("ray-driver", tmp_path_factory) if r.info.status == "FINISHED"}
    assert 1 <= len(before) < 3

    assert main(argv) == 0
    runs = fold_runs("ray-driver", tmp_path_factory)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len({r.data.tags["job_key"] for r in finished}) == len(finished) == 3  # one finished run per job
    assert before <= {r.info.run_id for r in finished}  # jobs finished before the kill were not run again
    assert not any(r.info.status == "RUNNING" for r in runs)


NODE = {"NodeID": "a", "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}
CPU_NODE = {**NODE, "NodeID": "b", "Resources": {"CPU": 8.0}}


def test_gpus_per_job_refuses_what_would_fail_or_hang():
    assert gpus_per_job([NODE], "a", "sqlite:///mlruns/mlflow.db", None, "auto") == 1.0
    assert gpus_per_job([CPU_NODE], "b", "sqlite:///mlruns/mlflow.db", None, "auto") == 0.0
    assert gpus_per_job([NODE, CPU_NODE], "a", "http://head:5000", 0.25, "cuda") == 0.25
    cases = [([NODE, CPU_NODE], "a", "sqlite:///mlruns/mlflow.db", None, "auto", "MLflow server"),
             ([CPU_NODE], "b", "sqlite:///x.db", 1.0, "auto", "--gpus-per-job 0"),
             ([NODE], "a", "sqlite:///x.db", 0.0, "cuda", "--device cpu")]
    for *args, hint in cases:
        with pytest.raises(BenchError, match=hint):
            gpus_per_job(*args)


def test_ray_executor_without_ray_names_the_install_command(tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(argv_for(tmp_path_factory, "no-ray", "--models", "snn", "--executor", "ray")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pip install -e '.[ray]'" in err and "Traceback" not in err
