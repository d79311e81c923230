"""`bench.run` end to end on a tiny synthetic cohort: what a fold run records, resume, kill, failures, bad input.

One synthetic root (blca, scale 0.06: 22 patients) and one sqlite store are made once per session
and shared, one experiment per scenario; `test_tune` and `test_mlflow_ui` reuse them through the
helpers below (a module-level cache, so each is built once however the tests are selected).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import bench.jobs
import bench.protocols
import bench.tune
from bench.data import COHORTS, DataRoot, open_cohort
from bench.data.synth import synthesize
from bench.run import main
from bench.splits import read_split
from bench.survival import c_index, fit_bin_edges
from bench.tracking import SETTING_TAGS, ui_command
from models import SurvivalOutput, get_model_class, list_models

REPO = Path(__file__).resolve().parents[1]
SWEEP_EXPERIMENT = "sweep"
SWEEP_MODELS = ("abmil", "snn")
SMALL = ["--cohorts", "blca", "--trials", "2", "--epochs", "2", "--seed", "1"]

_SESSION: dict = {}


def tiny_root(factory: pytest.TempPathFactory) -> Path:
    """Synthetic blca at scale 0.06 (generated, not pinned: split verification does not apply)."""
    if "root" not in _SESSION:
        root = factory.mktemp("synthetic")
        synthesize(root, cohorts=["blca"], scale=0.06, min_test_events=0, log=lambda s: None)
        _SESSION["root"] = root
    return _SESSION["root"]


def store_uri(factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the session: creating its schema costs seconds, experiments keep scenarios apart."""
    if "uri" not in _SESSION:
        _SESSION["uri"] = f"sqlite:///{factory.mktemp('mlflow') / 'mlflow.db'}"
    return _SESSION["uri"]


def argv_for(factory, experiment: str, *extra: str) -> list[str]:
    return ["--data-root", str(tiny_root(factory)), "--tracking-uri", store_uri(factory),
            "--experiment", experiment, *SMALL, *extra]


def swept(factory) -> dict:
    """The shared sweep: abmil and snn x blca x folds 0, 1, nested, 2 trials, 2 epochs, on 2 worker processes
    (so two of the four jobs queue)."""
    if "sweep" not in _SESSION:
        argv = argv_for(factory, SWEEP_EXPERIMENT, "--models", ",".join(SWEEP_MODELS), "--folds", "0,1",
                        "--workers", "2")
        t0 = time.perf_counter()
        code = main(argv)
        _SESSION["sweep"] = {"argv": argv, "code": code, "seconds": time.perf_counter() - t0,
                             "uri": store_uri(factory), "root": tiny_root(factory)}
    return _SESSION["sweep"]


def runs_of(client: MlflowClient, experiment: str, kind: str = "fold") -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.run_kind = '{kind}'", max_results=1000)


def artifact_csv(client: MlflowClient, run, name: str, tmp: Path) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run.info.run_id, name, str(tmp)))


def test_sweep_records_fold_and_parent_runs(tmp_path_factory, tmp_path):
    s = swept(tmp_path_factory)
    assert s["code"] == 0
    client = MlflowClient(s["uri"])
    runs = runs_of(client, SWEEP_EXPERIMENT)
    assert sorted((r.data.tags["model"], r.data.tags["fold"]) for r in runs) == [
        (m, f) for m in SWEEP_MODELS for f in ("0", "1")]
    root = DataRoot(s["root"])
    cohort = open_cohort(root, "blca")
    for run in runs:
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        fold = int(tags["fold"])
        split = read_split(root.split("blca", fold))
        where = f"{tags['model']} fold {fold}"
        assert run.info.status == "FINISHED", where
        assert (tags["cohort"], tags["protocol"], tags["data"], tags["seed"]) == ("blca", "nested", "synthetic", "1")
        assert tags["split_sha256"] == split.sha256
        assert_known_commit(tags["git_commit"])
        assert {"c_index", "c_index_ipcw", "oracle_c_index"} <= metrics.keys(), where

        pred = artifact_csv(client, run, "predictions.csv", tmp_path / run.info.run_id)
        test, train = pred[pred["split"] == "test"], pred[pred["split"] == "train"]
        assert sorted(test["case_id"]) == sorted(split.val) and sorted(train["case_id"]) == sorted(split.train)
        assert metrics["c_index"] == pytest.approx(c_index(test["time"], test["event"], test["risk"]), abs=1e-6)
        assert metrics["oracle_c_index"] == pytest.approx(c_index(test["time"], test["event"], test["true_risk"]), abs=1e-6)

        # nested: bins cut on the outer training side only, params = the best COMPLETE trial's
        p = cohort.patients.loc[list(split.train)]
        edges = fit_bin_edges(p["time"].to_numpy(), p["event"].to_numpy())
        assert params["bin_edges"] == ",".join(f"{e:.4f}" for e in edges), where
        assert (int(params["n_train"]), int(params["n_test"])) == (len(split.train), len(split.val))
        trials = artifact_csv(client, run, "trials.csv", tmp_path / run.info.run_id)
        assert len(trials) == 2
        complete = trials[trials["state"] == "COMPLETE"].sort_values("number")
        best = complete[complete["value"] == complete["value"].max()].iloc[0]  # ties: the earliest trial
        for key in ("lr", "weight_decay", "dropout"):
            assert float(params[key]) == pytest.approx(best[f"params_{key}"], rel=1e-6), (where, key)

        # provenance: every setting the result depends on, and a suite version that names this checkout
        assert set(SETTING_TAGS) <= tags.keys(), where
        assert tags["data_root"] == str(s["root"].resolve()) and tags["precision"] == "fp32" and tags["device"] == "cpu"
        assert tags["features_dir"] == str((s["root"] / "features" / "tcga_blca").resolve())
        n_slides = sum(len(slides) for slides in cohort.patients["slides"])
        assert (tags["features_width"], tags["features_files"]) == ("1024", str(n_slides))
        assert tags["suite_version"].startswith("0.1.0+code.") and len(tags["git_commit"]) == 40
        assert (tags["bins_cut_on"], tags["scored_epoch"]) == ("outer training fold", "last")
        assert tags["cpu_threads"] == "1"

    parents = runs_of(client, SWEEP_EXPERIMENT, "parent")
    assert sorted(r.data.tags["model"] for r in parents) == sorted(SWEEP_MODELS)
    for parent in parents:
        children = [r for r in runs if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(children) == 2
        c = [r.data.metrics["c_index"] for r in children]
        assert parent.data.metrics["c_index_mean"] == pytest.approx(np.mean(c))
        assert parent.data.metrics["c_index_std"] == pytest.approx(np.std(c))
        # the parent spans its folds: it starts as its first fold starts and ends with the last one
        first = min(r.info.start_time for r in children)
        assert first - 5000 < parent.info.start_time <= first
        assert parent.info.end_time == max(r.info.end_time for r in children)


def test_a_fold_runs_duration_is_its_jobs_compute_time_when_jobs_queue(tmp_path_factory):
    """Four jobs on two workers: a run starts as its job starts, not when the sweep does, so the runs table's
    Duration is the job's own time (job_seconds plus its cohort's first load in the worker and its logging),
    without the wait for a worker or the workers' own start. Before, every run was created at the sweep's start:
    durations of 37-40 s for jobs that computed 2-14 s."""
    s = swept(tmp_path_factory)
    runs = runs_of(MlflowClient(s["uri"]), SWEEP_EXPERIMENT)
    for r in runs:
        duration, compute = (r.info.end_time - r.info.start_time) / 1000, r.data.metrics["job_seconds"]
        assert compute <= duration < compute + 5.0, (r.data.tags["model"], r.data.tags["fold"], duration, compute)
    first_free = min(r.info.end_time for r in runs) - 2000  # a worker frees up before its job is logged
    queued = sorted(runs, key=lambda r: r.info.start_time)[2:]
    assert all(r.info.start_time >= first_free for r in queued), "the last two jobs started before a worker was free"


def assert_known_commit(sha: str) -> None:
    """The tag names a commit of this checkout (HEAD may have moved on since: others commit meanwhile)."""
    if not (REPO / ".git").exists():
        assert sha == "unknown"
        return
    assert len(sha) == 40
    assert subprocess.run(["git", "merge-base", "--is-ancestor", sha, "HEAD"], cwd=REPO).returncode == 0


def test_rerun_skips_every_finished_job(tmp_path_factory, monkeypatch, capsys):
    s = swept(tmp_path_factory)
    client = MlflowClient(s["uri"])
    state = lambda: sorted((r.info.run_id, r.info.status) for kind in ("fold", "parent")  # noqa: E731
                           for r in runs_of(client, SWEEP_EXPERIMENT, kind))
    before = state()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished job was trained again")

    monkeypatch.setattr(bench.protocols, "fit", no_training)
    monkeypatch.setattr(bench.tune, "fit", no_training)
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main([*s["argv"], "--workers", "1"]) == 0  # in this process, where `fit` is replaced
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert out.count("already finished") == 4 and "rerunning" not in err
    experiment_id = client.get_experiment_by_name(SWEEP_EXPERIMENT).experiment_id
    assert f"the experiment's runs table: http://127.0.0.1:5000/#/experiments/{experiment_id}" in out
    assert f"browse the runs: {ui_command(s['uri'])}\n" in out  # tests/test_mlflow_ui.py runs it
    assert state() == before
    assert seconds < 20, f"a rerun with nothing to do took {seconds:.1f} s"


def test_killed_sweep_resumes_with_one_finished_run_per_job(tmp_path_factory, tmp_path):
    """SIGKILL once a job runs; the rerun resumes the dead job's run (same id) and finishes every job in one run.

    In-process jobs (`--workers 1`) keep it quick: spawning pool workers costs seconds of imports each.
    """
    argv = argv_for(tmp_path_factory, "killed", "--models", "snn", "--folds", "0,1", "--workers", "1")
    client = MlflowClient(store_uri(tmp_path_factory))
    journals = Path(store_uri(tmp_path_factory).removeprefix("sqlite:///")).parent / "optuna" / "killed"
    with open(tmp_path / "log.txt", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.run", *argv], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not (any(r.info.status == "RUNNING" for r in runs_of(client, "killed"))
                       and any(journals.glob("*.log"))):  # a fold run is open and its study has started
                assert proc.poll() is None, "the sweep ended before it could be killed:\n" + (tmp_path / "log.txt").read_text()
                assert time.monotonic() < deadline, "no job started within 120 s"
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the sweep and anything it started
            proc.wait()
    stale = {r.info.run_id for r in runs_of(client, "killed") if r.info.status == "RUNNING"}
    assert len(stale) == 1 and not any(r.info.status == "FINISHED" for r in runs_of(client, "killed"))

    # a fresh process, as a user's rerun: it computes the suite version anew, like the killed sweep did
    done = subprocess.run([sys.executable, "-m", "bench.run", *argv], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    runs = runs_of(client, "killed")
    by_job: dict[str, list[str]] = {}
    for r in runs:
        by_job.setdefault(r.data.tags["job_key"], []).append(r.info.status)
    assert sorted(by_job.values()) == [["FINISHED"], ["FINISHED"]], by_job  # one run per job, no KILLED clutter
    assert stale <= {r.info.run_id for r in runs}  # the dead attempt's run was resumed, not replaced


def test_paper_protocol_logs_optimistic_best_epoch(tmp_path_factory, tmp_path):
    """Fixed paper params, bins cut on the whole cohort, and the best-epoch C-index labelled optimistic."""
    assert main(argv_for(tmp_path_factory, "paper", "--protocol", "paper", "--models", "snn", "--folds", "0",
                         "--workers", "1")) == 0
    client = MlflowClient(store_uri(tmp_path_factory))
    (run,) = runs_of(client, "paper")
    m, params = run.data.metrics, run.data.params
    assert run.info.status == "FINISHED" and run.data.tags["protocol"] == "paper"
    assert {"c_index", "c_index_best_epoch_optimistic"} <= m.keys()
    assert m["c_index"] <= m["c_index_best_epoch_optimistic"]  # the last epoch is one of the epochs watched
    assert run.data.tags["bins_cut_on"] == "whole cohort, including the scored fold"
    assert run.data.tags["scored_epoch"] == "last"
    snn = get_model_class("snn")
    assert (float(params["lr"]), float(params["dropout"]), float(params["l1_reg"])) == (
        snn.paper_defaults["lr"], snn.paper_defaults["dropout"], snn.paper_defaults["l1_reg"])
    cohort = open_cohort(DataRoot(tiny_root(tmp_path_factory)), "blca")
    edges = fit_bin_edges(cohort.patients["time"].to_numpy(), cohort.patients["event"].to_numpy())
    assert params["bin_edges"] == ",".join(f"{e:.4f}" for e in edges)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model", "predictions.csv"]  # saved by default


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD_INPUT = {
    "unknown model": (["--models", "abmil,nope"], ["unknown model 'nope'", *list_models()]),
    "unknown cohort": (["--models", "snn", "--cohorts", "blca,xyz"], ["unknown cohort 'xyz'", *COHORTS]),
    "fold out of range": (["--models", "snn", "--folds", "0,7"], ["--folds '0,7' is out of range", "0..4"]),
    "no trials": (["--models", "snn", "--trials", "0"], ["--trials 0", "at least 1 Optuna trial"]),
    "no workers": (["--models", "snn", "--workers", "0"], ["--workers 0", "at least 1"]),
    "no threads": (["--models", "snn", "--threads-per-job", "0"], ["--threads-per-job 0", "at least 1 thread"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_arguments_exit_2_before_any_work(case, tmp_path_factory, tmp_path, capsys, monkeypatch):
    extra, expected = BAD_INPUT[case]
    store = tmp_path / "store"
    monkeypatch.chdir(tmp_path)  # nothing may be generated in the working directory either
    argv = ["--data-root", str(tiny_root(tmp_path_factory)), "--tracking-uri", f"sqlite:///{store}/mlflow.db",
            "--epochs", "1", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    flat = " ".join(err.split())
    for text in expected:
        assert text in flat, (text, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("uri", ["sqlite:////proc/nope/x.db", "http://127.0.0.1:{port}"])
def test_unusable_tracking_store_fails_fast(uri, tmp_path_factory, capsys):
    uri = uri.format(port=closed_port())
    t0 = time.perf_counter()
    code = main(["--data-root", str(tiny_root(tmp_path_factory)), "--tracking-uri", uri, "--models", "snn",
                 "--cohorts", "blca", "--folds", "0", "--epochs", "1"])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert uri in " ".join(err.split()) and "--tracking-uri" in err
    assert seconds < 15, f"an unusable tracking store took {seconds:.0f} s to report"


def test_cohort_missing_from_the_data_root_stops_before_any_job(tmp_path_factory, capsys):
    """The root holds blca only: asking for blca and brca must fail at once, not after blca's jobs."""
    argv = argv_for(tmp_path_factory, "missing-cohort", "--protocol", "paper", "--models", "snn", "--folds", "0",
                    "--workers", "1")
    argv[argv.index("--cohorts") + 1] = "blca,brca"
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: cohort table" in err and "tcga_brca_all_clean.csv.zip does not exist" in err
    assert runs_of(MlflowClient(store_uri(tmp_path_factory)), "missing-cohort") == []


def test_failing_jobs_are_recorded_and_the_sweep_goes_on(tmp_path_factory, monkeypatch, capsys):
    """abmil fails twice: fold 0 with an unexpected exception, fold 1 with NaN logits. Both runs are FAILED
    with the reason, stderr names the cause of each (not a traceback's first line), snn finishes; exit 1."""
    cls = get_model_class("abmil")
    real = cls.forward
    calls = []

    def broken_forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the first job's first step: a bug, not a training failure
            raise RuntimeError("boom in forward")
        return SurvivalOutput(real(self, *args, **kwargs).logits * float("nan"))

    monkeypatch.setattr(cls, "forward", broken_forward)
    argv = argv_for(tmp_path_factory, "failing", "--protocol", "paper", "--models", "abmil,snn", "--folds", "0,1",
                    "--workers", "1")  # in this process, where forward is replaced
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "abmil blca fold 0 seed 1: RuntimeError: boom in forward" in err
    assert "abmil blca fold 1 seed 1: abmil: non-finite loss" in err
    runs = {(r.data.tags["model"], r.data.tags["fold"]): r for r in runs_of(MlflowClient(store_uri(tmp_path_factory)), "failing")}
    assert "Traceback" in runs["abmil", "0"].data.tags["failure_reason"]
    assert "RuntimeError: boom in forward" in runs["abmil", "0"].data.tags["failure_reason"]
    assert "non-finite loss" in runs["abmil", "1"].data.tags["failure_reason"]
    for fold in "01":
        assert runs["abmil", fold].info.status == "FAILED" and "c_index" not in runs["abmil", fold].data.metrics
        assert runs["snn", fold].info.status == "FINISHED" and "c_index" in runs["snn", fold].data.metrics


def test_real_data_mode_reads_mcat_style_pt_features(tmp_path_factory, tmp_path):
    """`--data tcga --features-dir DIR`: the user's CLAM features in MCAT's `tcga_<c>_20x_features/pt_files/`."""
    src = tiny_root(tmp_path_factory)
    root = tmp_path / "tcga"
    root.mkdir()
    for part in ("signatures.csv", "synth.json", "tables", "splits"):  # no truth/: real data has no oracle
        (shutil.copytree if (src / part).is_dir() else shutil.copy)(src / part, root / part)
    pt_dir = tmp_path / "feats" / "tcga_blca_20x_features" / "pt_files"
    pt_dir.mkdir(parents=True)
    for h5 in (src / "features" / "tcga_blca" / "h5_files").glob("*.h5"):
        with h5py.File(h5) as f:
            torch.save(torch.from_numpy(f["features"][:]), pt_dir / f"{h5.stem}.pt")
    argv = ["--data", "tcga", "--data-root", str(root), "--features-dir", str(tmp_path / "feats"),
            "--tracking-uri", store_uri(tmp_path_factory), "--experiment", "tcga-pt", "--models", "abmil",
            "--cohorts", "blca", "--folds", "0", "--trials", "1", "--epochs", "1", "--workers", "1"]
    assert main(argv) == 0
    (run,) = runs_of(MlflowClient(store_uri(tmp_path_factory)), "tcga-pt")
    assert run.info.status == "FINISHED" and run.data.tags["data"] == "tcga"
    assert "c_index" in run.data.metrics and "oracle_c_index" not in run.data.metrics
    pred = artifact_csv(MlflowClient(store_uri(tmp_path_factory)), run, "predictions.csv", tmp_path)
    assert set(pred["case_id"]) == set(open_cohort(DataRoot(root), "blca").case_ids)


def test_changed_inputs_rerun_the_job_and_name_the_reason_once(tmp_path_factory, tmp_path, capsys):
    """A bigger feature file, other bytes in a file of the same size, bf16 and another data root each rerun both
    jobs, with the reason on stderr once; an unchanged rerun trains nothing. ABMIL reads the slides (an SNN-only
    sweep opens no feature folder: its features tags read `none`)."""
    root = tmp_path / "root"
    shutil.copytree(tiny_root(tmp_path_factory), root)
    argv = argv_for(tmp_path_factory, "provenance", "--models", "abmil", "--folds", "0,1", "--trials", "1",
                    "--epochs", "1", "--workers", "1")
    argv[argv.index("--data-root") + 1] = str(root)
    client = MlflowClient(store_uri(tmp_path_factory))

    def rerun(*extra: str) -> tuple[str, list]:
        capsys.readouterr()
        assert main([*argv, *extra]) == 0
        out, err = capsys.readouterr()
        return out, err, sorted(runs_of(client, "provenance"), key=lambda r: r.info.start_time)

    rerun()
    out, err, runs = rerun()
    assert out.count("already finished") == 2 and "rerunning" not in err and len(runs) == 2

    with h5py.File(next((root / "features" / "tcga_blca" / "h5_files").glob("*.h5")), "a") as f:
        f.create_dataset("grown", data=np.zeros(256))  # same features, bigger file: inputs may have changed
    out, err, runs = rerun()
    assert len(runs) == 4 and out.count("already finished") == 0
    assert err.count("rerunning jobs") == 1 and "features_hash" in err and "precision" not in err
    assert runs[2].data.tags["features_hash"] != runs[0].data.tags["features_hash"]

    path = next((root / "features" / "tcga_blca" / "h5_files").glob("*.h5"))
    size = path.stat().st_size
    with h5py.File(path, "a") as f:  # another encoder's features of the same width: same names, same sizes
        f["features"][...] = -f["features"][...]
    assert path.stat().st_size == size
    out, err, runs = rerun()
    assert len(runs) == 6 and err.count("rerunning jobs") == 1 and "features_hash" in err
    assert runs[4].data.tags["features_hash"] != runs[2].data.tags["features_hash"]

    out, err, runs = rerun("--precision", "bf16")
    assert len(runs) == 8 and err.count("rerunning jobs") == 1 and "precision fp32 -> bf16" in err

    other = tmp_path / "moved"
    shutil.copytree(root, other)
    argv[argv.index("--data-root") + 1] = str(other)
    out, err, runs = rerun("--precision", "bf16")
    assert len(runs) == 10 and err.count("rerunning jobs") == 1
    assert f"data_root {root.resolve()} -> {other.resolve()}" in " ".join(err.split())
    assert "features_hash" not in err  # same files, same bytes: only where they are changed
    out, err, runs = rerun("--precision", "bf16", "--threads-per-job", "2")
    assert len(runs) == 12 and err.count("rerunning jobs") == 1 and "cpu_threads 1 -> 2" in err
    assert all(r.info.status == "FINISHED" for r in runs)


def test_micro_batch_and_token_budget_rerun_the_job_and_the_report_refuses_their_mix(tmp_path_factory, tmp_path,
                                                                                        capsys):
    """They regroup bags, so dropout draws differ: each is a setting tag. A changed --max-tokens reruns fold 0 and a
    changed --micro-batch fold 1, naming the change once; the report then refuses the table until --allow-mixed."""
    from bench.errors import cli_main
    from bench.report import main as report_main

    report = cli_main(report_main)
    argv = argv_for(tmp_path_factory, "regrouped", "--models", "abmil", "--trials", "1", "--epochs", "1",
                    "--workers", "1")
    client = MlflowClient(store_uri(tmp_path_factory))
    assert main([*argv, "--folds", "0,1"]) == 0
    first = {r.data.tags["fold"]: r for r in runs_of(client, "regrouped")}
    assert {(r.data.tags["micro_batch"], r.data.tags["max_tokens"]) for r in first.values()} == {("8", "65536")}
    capsys.readouterr()
    assert main([*argv, "--folds", "0", "--max-tokens", "100"]) == 0
    out, err = capsys.readouterr()
    assert "already finished" not in out and err.count("rerunning jobs") == 1 and "max_tokens 65536 -> 100" in err
    assert main([*argv, "--folds", "1", "--micro-batch", "4"]) == 0
    out, err = capsys.readouterr()
    assert "already finished" not in out and "micro_batch 8 -> 4" in " ".join(err.split())
    runs = runs_of(client, "regrouped")
    assert len(runs) == 4 and len({r.data.tags["job_key"] for r in runs}) == 4

    uri, out_dir = store_uri(tmp_path_factory), tmp_path / "report"
    assert report(["--tracking-uri", uri, "--experiment", "regrouped", "--out", str(out_dir)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "max_tokens: 100 (1 run" in err and "micro_batch: 4 (1 run" in err and not out_dir.exists()
    assert report(["--tracking-uri", uri, "--experiment", "regrouped", "--out", str(out_dir), "--allow-mixed"]) == 0


def test_worker_count_never_changes_a_number(tmp_path_factory, tmp_path, monkeypatch):
    """The shared sweep ran in 2 worker processes; the same jobs in this process (`--workers 1`) give the same
    C-index to the last bit, because each job computes on --threads-per-job threads (1), not on what its
    executor has. Before, an in-process job took every core, and G-HANet's C on one fold of the synthetic
    default moved 0.797 -> 0.780 between --workers 2 and --workers 1."""
    s = swept(tmp_path_factory)
    seen = []
    real = bench.jobs.fit_and_score

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.jobs, "fit_and_score", counting)
    threads = torch.get_num_threads()
    argv = list(s["argv"])
    argv[argv.index("--experiment") + 1] = "one-worker"
    assert main([*argv, "--workers", "1"]) == 0
    assert seen == [1] * 4 and torch.get_num_threads() == threads
    client = MlflowClient(s["uri"])
    runs = {exp: {(r.data.tags["model"], r.data.tags["fold"]): r for r in runs_of(client, exp)}
            for exp in (SWEEP_EXPERIMENT, "one-worker")}
    assert runs["one-worker"].keys() == runs[SWEEP_EXPERIMENT].keys() and len(runs["one-worker"]) == 4
    for key, run in runs["one-worker"].items():
        pool = runs[SWEEP_EXPERIMENT][key]
        assert run.data.metrics["c_index"] == pool.data.metrics["c_index"], key
        pred = [artifact_csv(client, r, "predictions.csv", tmp_path / r.info.run_id) for r in (run, pool)]
        pd.testing.assert_frame_equal(pred[0], pred[1], check_exact=True)  # every risk and S to the last digit


def test_suite_version_names_the_result_code_not_the_commit():
    """A commit of docs, tests or the report keeps the version (no rerun); the sweep's code files decide it."""
    import hashlib
    import subprocess

    from bench.provenance import NOT_RESULT_CODE, REPO, suite_version

    files = subprocess.run(["git", "ls-tree", "-r", "HEAD", "--", "bench", "models", "pyproject.toml"],
                           capture_output=True, text=True, cwd=REPO).stdout
    if not files:
        pytest.skip("not a git checkout: the suite version is the package version alone")
    kept = [line for line in files.splitlines(keepends=True)
            if not any(line.split("\t")[1].rstrip("\n") == p or line.split("\t")[1].startswith(p + "/")
                       for p in NOT_RESULT_CODE)]
    assert len(kept) < len(files.splitlines()) and any("\tbench/train.py" in line for line in kept)
    expected = "0.1.0+code." + hashlib.sha256("".join(kept).encode()).hexdigest()[:12]
    assert suite_version().split(".dirty.")[0] == expected
