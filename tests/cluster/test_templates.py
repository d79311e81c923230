"""The Slurm and Kubernetes templates, checked as far as they can be without a scheduler.

Each parses (bash -n; YAML), and each command of this project's stack that they run exists with the flags
they pass it: `python -m bench.run` (its own parser takes the whole argument list), `python -m bench.report`,
`mlflow server`, `ray symmetric-run` and the `ray start` options it forwards (the click commands' options), and
KubeRay's `rayStartParams` (options of `ray start`). Not checked here: Slurm's own programs (sbatch, srun,
scontrol), curl, and the RayJob against KubeRay's schema (that needs its CRD and a cluster).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess

import pytest
import yaml

from bench.run import parse_args
from tests.cluster.parts import REPO

pytestmark = pytest.mark.cluster

SBATCH = REPO / "scripts" / "slurm" / "ray_sweep.sbatch"
RAYJOB = REPO / "scripts" / "k8s" / "rayjob.yaml"


def logical_lines(script: str) -> list[list[str]]:
    """The script's commands as word lists: continuations joined, comments dropped, `$VAR` words kept as they are."""
    joined = re.sub(r"\\\n", " ", script)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line, comments=True))
    return out


def after(words: list[str], *head: str) -> list[str] | None:
    """The words after the first run of `head` in `words`, up to a shell operator (&, >, &&, |, ;), or None."""
    for i in range(len(words) - len(head) + 1):
        if words[i:i + len(head)] == list(head):
            rest = []
            for w in words[i + len(head):]:
                if w in ("&", "&&", "|", ";", ">", "2>&1") or w.startswith(">"):
                    break
                rest.append(w)
            return rest
    return None


def flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def click_options(command) -> set[str]:
    return {o for p in command.params for o in p.opts}


def ray_command(name: str):
    from ray.scripts.scripts import cli

    return cli.commands[name]


def bench_run_args(args: list[str]) -> list[str]:
    """Template words as bench.run would get them: a placeholder for each shell variable, without the caller's "$@"."""
    return [re.sub(r"\$\{?\w+\}?", "X", a) for a in args if a != "$@"]


def report_flags() -> set[str]:
    from bench.report import main

    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        main(["--help"])
    return set(re.findall(r"--[a-z][a-z-]+", text.getvalue()))


def test_the_slurm_template_parses_and_runs_commands_that_take_its_flags():
    script = SBATCH.read_text()
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    directives = [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives and all(re.fullmatch(r"--[a-z-]+=\S+|--[a-z-]+", d) for d in directives), directives

    lines = logical_lines(script)
    server = next(a for w in lines if (a := after(w, "mlflow", "server")) is not None)
    assert set(flags(server)) <= click_options(__import__("mlflow.cli", fromlist=["server"]).server), server
    assert {"--backend-store-uri", "--artifacts-destination", "--host", "--port"} <= set(flags(server))

    (step,) = [w for w in lines if "symmetric-run" in w]
    ray_args = after(step, "ray", "symmetric-run")
    ray_args, entry = ray_args[:ray_args.index("--")], ray_args[ray_args.index("--") + 1:]
    own = click_options(ray_command("symmetric-run"))
    forwarded = [f for f in flags(ray_args) if f not in own]  # symmetric-run hands the rest to `ray start`
    assert set(forwarded) <= click_options(ray_command("start")), forwarded

    assert entry[:3] == ["python", "-m", "bench.run"], entry
    args = parse_args(bench_run_args(entry[3:]))  # bench.run's own parser: an unknown flag exits
    assert args.executor == "ray" and args.ray_address == "auto" and args.tracking_uri.startswith("http://")

    report = next(a for w in lines if (a := after(w, "python", "-m", "bench.report")) is not None)
    assert set(flags(report)) <= report_flags(), report


def test_the_kubernetes_rayjob_parses_and_runs_commands_that_take_its_flags():
    job = yaml.safe_load(RAYJOB.read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    entry = shlex.split(spec["entrypoint"])
    assert entry[:3] == ["python", "-m", "bench.run"], entry
    args = parse_args(bench_run_args(entry[3:]))
    assert args.executor == "ray" and args.ray_address == "auto" and args.tracking_uri.startswith("http://")
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"], dict)

    cluster = spec["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    start = click_options(ray_command("start"))
    for group in groups:
        assert {f"--{k}" for k in group.get("rayStartParams", {})} <= start, group.get("rayStartParams")
        pod = group["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["image"]
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, container["name"]
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
