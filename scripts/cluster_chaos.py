"""Chaos benchmark of the Ray path (not run by CI): kill the worker node, or the tracking server, at a random moment.

    python scripts/cluster_chaos.py [--rounds 5] [--seed 0] [--out cluster-chaos.json]

On the cluster tier's parts (tests/cluster/parts.py: PostgreSQL, an MLflow server on it, a Ray head and worker
of one CPU each, all on 127.0.0.1 and stopped at the end): the tier's four-job sweep (snn and coxnet on a tiny
synthetic blca, folds 0 and 1, 1 trial, 1 epoch) runs once locally, once on the cluster undisturbed (the
baseline wall time), then `--rounds` times with the worker node killed (kill -9 of all its processes; a new
worker joins before the next round) and `--rounds` times with the tracking server killed and restarted on its
port, each at a moment drawn uniformly from the first 0-10 s after the sweep's first fold run appears. Each
round has its own experiment and Optuna database. After each, it counts per job the FINISHED fold runs
(want exactly 1), the runs left unfinished or deleted (a retry replaces an attempt that died after logging
its params), and compares the C-indices and predictions.csv with the local sweep's. Prints a table and
writes every number to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster.parts import (RAY_ENV, MlflowServer, Postgres, RayNode, kill_group, spawn,  # noqa: E402
                                 tail, wait_for)

SWEEP = ["--models", "snn,coxnet", "--cohorts", "blca", "--folds", "0,1", "--trials", "1", "--epochs", "1",
         "--seed", "1"]
JOBS = {(m, f) for m in ("snn", "coxnet") for f in ("0", "1")}
ENV = {**os.environ, **RAY_ENV, "MLFLOW_DISABLE_TELEMETRY": "true"}
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # this script downloads 44 small files


def fold_runs(uri: str, experiment: str, everything: bool = False) -> list:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    view = ViewType.ALL if everything else ViewType.ACTIVE_ONLY
    return client.search_runs([exp.experiment_id], "tags.run_kind = 'fold'", run_view_type=view, max_results=1000)


def predictions(uri: str, run_id: str, folder: Path) -> bytes:
    from mlflow.tracking import MlflowClient

    return Path(MlflowClient(uri).download_artifacts(run_id, "predictions.csv", str(folder))).read_bytes()


def outcome(uri: str, experiment: str, reference: dict, work: Path) -> dict:
    """Per job: FINISHED runs, unfinished and deleted runs; C-index and predictions.csv against the local sweep's."""
    from mlflow.tracking import MlflowClient

    runs = fold_runs(uri, experiment, everything=True)
    finished = Counter()
    left = Counter()
    deleted = Counter()
    same_c = same_pred = 0
    for r in runs:
        job = (r.data.tags["model"], r.data.tags["fold"])
        if r.info.lifecycle_stage == "deleted":
            deleted[job] += 1
        elif r.info.status == "FINISHED":
            finished[job] += 1
            c, pred = reference[job]
            same_c += r.data.metrics.get("c_index") == c
            same_pred += predictions(uri, r.info.run_id, work / r.info.run_id) == pred
        else:
            left[job] += 1
    client = MlflowClient(uri)
    parents = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.run_kind = 'parent'")
    return {"lost": sum(finished[j] == 0 for j in JOBS), "duplicated": sum(max(0, finished[j] - 1) for j in JOBS),
            "unfinished_runs": sum(left.values()), "deleted_runs": sum(deleted.values()),
            "c_index_equal": same_c, "predictions_equal": same_pred,
            "parents_per_model": dict(Counter(p.data.tags["model"] for p in parents))}


def run_sweep(args: list[str], log: Path, during=None) -> tuple[int, float, dict]:
    """One cluster sweep through the CLI; `during(driver)` acts while it runs and returns what it measured."""
    t0 = time.monotonic()
    driver = spawn([sys.executable, "-m", "bench.run", *args], log, cwd=log.parent, env=ENV)
    try:
        measured = during(driver) if during else {}
        code = driver.wait(timeout=900)
    finally:
        kill_group(driver)
    return code, time.monotonic() - t0, measured


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("cluster-chaos.json"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    from bench.data.synth import synthesize

    work = Path(tempfile.mkdtemp(prefix="ghanet-chaos-"))
    report = {"rounds": []}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        root = work / "synthetic"
        synthesize(root, cohorts=["blca"], scale=0.06, min_test_events=0, log=lambda s: None)
        pg = Postgres()
        stack.callback(pg.stop)
        pg.start()
        server = MlflowServer(pg.create_database("mlflow"), work / "artifacts", work / "mlflow-server.log")
        stack.callback(server.kill)
        server.launch()
        head = RayNode(work / "ray-head")
        stack.callback(head.kill)
        head.start()
        workers = [RayNode(work / "ray-worker0", head=head.address)]
        stack.callback(lambda: [w.kill() for w in workers])
        workers[0].start()
        server.wait()

        local_uri = f"sqlite:///{work / 'local' / 'mlflow.db'}"
        t0 = time.monotonic()
        local = subprocess.run([sys.executable, "-m", "bench.run", "--data-root", str(root), "--tracking-uri",
                                local_uri, "--experiment", "local", "--workers", "1", *SWEEP], cwd=work, env=ENV,
                               capture_output=True, text=True)
        assert local.returncode == 0, local.stdout + local.stderr
        report["local_sweep_s"] = time.monotonic() - t0
        reference = {}
        for r in fold_runs(local_uri, "local"):
            job = (r.data.tags["model"], r.data.tags["fold"])
            reference[job] = (r.data.metrics["c_index"], predictions(local_uri, r.info.run_id, work / "local-pred" / r.info.run_id))

        def cluster_args(name: str) -> list[str]:
            return ["--data-root", str(root), "--experiment", name, *SWEEP, "--executor", "ray", "--ray-address",
                    head.address, "--tracking-uri", server.uri, "--optuna-storage", pg.create_database(name)]

        code, seconds, _ = run_sweep(cluster_args("baseline"), work / "baseline.log")
        assert code == 0, tail(work / "baseline.log")
        report["baseline_sweep_s"] = seconds
        print(f"local sweep {report['local_sweep_s']:.1f} s; undisturbed cluster sweep {seconds:.1f} s", flush=True)

        for kind in ("node", "server"):
            for i in range(1, args.rounds + 1):
                name = f"{kind}{i}"
                delay = rng.uniform(0, 10)

                def chaos(driver, name=name, delay=delay, kind=kind):
                    log = work / f"{name}.log"
                    wait_for(lambda: fold_runs(server.uri, name), 300, "the sweep's first fold run", driver, log, 0.2)
                    time.sleep(delay)
                    running = [r for r in fold_runs(server.uri, name) if r.info.status == "RUNNING"]
                    t_kill = time.monotonic()
                    if kind == "node":
                        worker = workers[-1]
                        on_worker = sum(r.data.tags.get("ray_node_id") == worker.node_id for r in running)
                        worker.kill()
                        wait_for(lambda: worker.node_id not in head.alive_nodes(), 120, "the worker declared dead")
                        return {"jobs_running_on_the_killed_node": on_worker,
                                "declared_dead_after_s": time.monotonic() - t_kill}
                    server.kill()
                    server.start()
                    return {"jobs_running_at_the_kill": len(running), "server_down_s": time.monotonic() - t_kill}

                code, seconds, measured = run_sweep(cluster_args(name), work / f"{name}.log", chaos)
                row = {"round": name, "kill_after_first_run_s": round(delay, 2), "exit_code": code,
                       "sweep_s": round(seconds, 1), **{k: round(v, 1) if isinstance(v, float) else v
                                                      for k, v in measured.items()},
                       **outcome(server.uri, name, reference, work / f"{name}-pred")}
                report["rounds"].append(row)
                print(json.dumps(row), flush=True)
                if code != 0:
                    print(tail(work / f"{name}.log", 40), flush=True)
                if kind == "node":  # a fresh worker for the next round
                    workers.append(RayNode(work / f"ray-worker{i}", head=head.address).start())

    rows = report["rounds"]
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{'round':8s} {'exit':>4s} {'sweep s':>8s} {'lost':>4s} {'dup':>4s} {'unfin':>5s} {'deleted':>7s} "
          f"{'C equal':>7s} {'pred equal':>10s}")
    for r in rows:
        print(f"{r['round']:8s} {r['exit_code']:4d} {r['sweep_s']:8.1f} {r['lost']:4d} {r['duplicated']:4d} "
              f"{r['unfinished_runs']:5d} {r['deleted_runs']:7d} {r['c_index_equal']:>5d}/4 {r['predictions_equal']:>8d}/4")
    bad = [r["round"] for r in rows if r["exit_code"] or r["lost"] or r["duplicated"] or r["unfinished_runs"]
           or r["c_index_equal"] != 4 or r["predictions_equal"] != 4]
    print(f"\n{len(rows)} rounds ({args.rounds} node kills, {args.rounds} server kills): "
          f"{len(rows) - len(bad)} with every job finished once and the local sweep's numbers"
          + (f"; not: {', '.join(bad)}" if bad else "") + f". Baseline cluster sweep {report['baseline_sweep_s']:.1f} s. "
          f"Written to {args.out}.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
