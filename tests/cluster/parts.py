"""The parts of a small real cluster on 127.0.0.1: PostgreSQL, an MLflow tracking server on it, two Ray nodes.

Used by the `cluster` test tier (tests/cluster/) and by scripts/cluster_chaos.py. Every part is a process
group of its own (`start_new_session`), started on ports picked free at run time, and stopped by a signal
to the whole group, SIGKILL at the latest, so that nothing it started outlives it. Nothing here ever
calls `ray stop`: that kills every Ray on the host.

PostgreSQL is Debian's package (`postgresql`, which `./reproduce.sh test` installs where it can): its
server refuses to run as root, so under root it runs as the package's `postgres` account.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's commands (mlflow)
# for the Ray nodes, the sweep's driver and this process: no usage report, and every address Ray resolves stays
# 127.0.0.1 (without it Ray swaps 127.0.0.1 for this machine's network address; see ray_start.py). Read when Ray
# is first imported, so set here, before any test imports it (tests/test_ray_executor.py asks for the same).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)
# Ray 2.60 turns token authentication on for a cluster started where ~/.ray/auth_token exists (any local ray.init()
# writes one, tests/test_ray_executor.py's too): the tier's cluster, on 127.0.0.1 only, says which it is instead
RAY_ENV["RAY_AUTH_MODE"] = "disabled"
# how fast the head's GCS declares a silent node dead: 1 s probes, 3 misses (Ray's default: 3 s, 5 misses)
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                   "RAY_health_check_timeout_ms": "1000"}
MEASURED: dict[str, float | str] = {}  # what the tier measured, printed after pytest's summary (conftest.py)


class Missing(Exception):
    """A part the install step could not provide here (the message says which and how to get it)."""


def _term_with_parent() -> None:
    """In the started shell, before it execs: SIGTERM when its parent dies (a test runner killed outright, when no
    finalizer runs), which its trap turns into SIGKILL for its whole process group."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


# A shell leads each process group the tests start and waits for the command; its exit status is the command's.
# Killed with its parent, it kills the group: a child the command started itself (the MLflow server's uvicorn)
# would otherwise outlive a killed test runner.
_LEADER = 'trap "kill -KILL 0" TERM; "$@" & wait $!'


def spawn(cmd: list, log: Path, **kw) -> subprocess.Popen:
    """`cmd` in a process group of its own, its output appended to `log`; stop it with `kill_group`."""
    linux = sys.platform.startswith("linux")
    with open(log, "ab") as out:
        return subprocess.Popen(["bash", "-c", _LEADER, "leader", *map(str, cmd)] if linux else cmd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_term_with_parent if linux else None, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(ready: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None, every: float = 0.1) -> None:
    """Poll `ready` until true; fail with the log's tail if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode}) before it was ready{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:g} s{tail(log)}")
        time.sleep(every)


def tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.is_file():
        return ""
    return "\n--- " + str(log) + " ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process (from /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def tree(pgid: int) -> list[int]:
    """The live processes of a process group and all their descendants (in case one left the group)."""
    table = _proc_table()
    found = {pid for pid, (_, group) in table.items() if group == pgid}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def kill_group(proc: subprocess.Popen, first: int = signal.SIGKILL, grace: float = 10.0) -> None:
    """Signal `proc`'s whole process group (it leads one) and its descendants; SIGKILL whatever is left after
    `grace` seconds."""
    for pid in tree(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
    deadline = time.monotonic() + grace
    while tree(proc.pid) and time.monotonic() < deadline and first != signal.SIGKILL:
        time.sleep(0.1)
    for pid in tree(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs: on PATH, or Debian's newest /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("pg_ctl") or shutil.which("postgres")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int("0" + p.parent.name.split(".")[0]),
                         reverse=True)
    for folder in candidates:
        if (folder / "postgres").is_file() and (folder / "initdb").is_file():
            return folder
    raise Missing("no PostgreSQL server here (no initdb and postgres on PATH or under /usr/lib/postgresql/*/bin). "
                  "`./reproduce.sh test` installs Debian's package where it runs as root (apt-get install "
                  "postgresql); elsewhere install PostgreSQL's server yourself.")


def require_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Missing("psycopg, the PostgreSQL driver SQLAlchemy (so MLflow and Optuna) uses for postgresql:// URLs, "
                      "is not installed: pip install -e '.[cluster]' (`./reproduce.sh test` does).") from None


class Postgres:
    """A throw-away PostgreSQL server on 127.0.0.1:<free port>, trust authentication, durability off (tests)."""

    def __init__(self):
        require_driver()
        self.bin = postgres_bin()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.kw: dict = {}
        # PostgreSQL refuses to run as root: as root, run it as the package's account (or nobody), in a folder
        # of its own straight in the system's temp dir (pytest's are closed to other accounts)
        self.dir = Path(tempfile.mkdtemp(prefix="ghanet-pg-"))
        if os.geteuid() == 0:
            import pwd

            user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
            if user is None:
                raise Missing("running as root, and there is no `postgres` or `nobody` account to run PostgreSQL as")
            entry = pwd.getpwnam(user)
            self.kw = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            for parent in self.dir.parents:  # the account must reach its folder
                if not os.access(parent, os.X_OK) or not parent.stat().st_mode & 0o001:
                    raise Missing(f"the PostgreSQL account {user} cannot enter {parent}: give the tests a temp dir "
                                  "every user can reach (TMPDIR)")
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    def start(self) -> Postgres:
        subprocess.run([self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                        "--no-sync", "--no-instructions"], check=True, capture_output=True, **self.kw)
        self.proc = spawn([self.bin / "postgres", "-D", self.data, "-p", str(self.port), "-c",
                           "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}", "-c", "fsync=off",
                           "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"],
                          self.log, **self.kw)
        wait_for(self._answers, 30, "PostgreSQL", self.proc, self.log)
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _answers(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, signal.SIGINT)  # fast shutdown: disconnects the clients
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class MlflowServer:
    """`mlflow server` on a PostgreSQL backend store, serving artifacts from a folder; kill and restart keep its port."""

    def __init__(self, backend: str, artifacts: Path, log: Path):
        self.backend, self.artifacts, self.log = backend, artifacts, log
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> MlflowServer:
        # no job runner: it starts 8 more Python processes (huey consumers) that this suite never gives work
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = spawn([BIN / "mlflow", "server", "--backend-store-uri", self.backend, "--artifacts-destination",
                           self.artifacts, "--host", "127.0.0.1", "--port", self.port, "--workers", "1"],
                          self.log, env=env, cwd=self.log.parent)
        return self

    def wait(self, timeout: float = 180) -> MlflowServer:
        wait_for(self.healthy, timeout, "the MLflow server", self.proc, self.log, every=0.2)
        return self

    def start(self) -> MlflowServer:
        return self.launch().wait()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9 of the server and its workers."""
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None

    stop = kill


class RayNode:
    """One Ray node (`ray start --block`, through ray_start.py): its own raylet, temp dir and ports, one CPU, no GPU.

    The head's GCS declares a node dead after `FAST_NODE_DEATH` (3 missed probes of 1 s) unless `env` says otherwise.
    """

    def __init__(self, temp_dir: Path, head: str | None = None, env: dict | None = None):
        self.temp_dir, self.head = temp_dir, head
        self.env = env if env is not None else FAST_NODE_DEATH
        self.port = free_port() if head is None else None
        self.address = f"127.0.0.1:{self.port}" if head is None else head
        self.log = temp_dir.with_suffix(".log")
        self.proc: subprocess.Popen | None = None
        self.node_id: str | None = None

    def start(self) -> RayNode:
        return self.launch().wait()

    def launch(self) -> RayNode:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        ports = {flag: str(free_port()) for flag in ("--node-manager-port", "--object-manager-port",
                                                      "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                      "--runtime-env-agent-port", "--metrics-export-port")}
        # the head's minimal dashboard process starts even without the dashboard, on 8265 unless told
        where = ["--head", "--port", str(self.port), "--include-dashboard", "false", "--dashboard-port",
                 str(free_port())] if self.head is None else ["--address", self.head]
        cmd = [sys.executable, Path(__file__).with_name("ray_start.py"), "start", "--block", *where,
               "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--object-store-memory",
               str(80 * 1024**2), "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
               *(x for kv in ports.items() for x in kv)]
        self._before = set(self.alive_nodes()) if self.head else set()
        self.proc = spawn(cmd, self.log, env={**os.environ, **RAY_ENV, **self.env}, cwd=self.temp_dir)
        return self

    def wait(self, timeout: float = 120) -> RayNode:
        """Until the head's GCS lists this node alive."""
        wait_for(lambda: bool(set(self.alive_nodes()) - self._before), timeout, "a Ray node", self.proc, self.log,
                 every=0.3)
        (self.node_id,) = set(self.alive_nodes()) - self._before
        return self

    def alive_nodes(self) -> dict[str, object]:
        """Live nodes of the cluster by node id, from the head's GCS (empty until it listens)."""
        from ray._raylet import GcsClient

        host, port = self.address.rsplit(":", 1)
        try:  # a GcsClient waits half a minute for a GCS that is not there yet
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return {}
        try:
            client = GcsClient(address=self.address)
            nodes = client.get_all_node_info(timeout=2)
        except Exception:
            return {}
        return {nid.hex(): info for nid, info in nodes.items() if info.state == 0}  # 0: ALIVE

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc is not None else []

    def kill(self) -> float:
        """kill -9 of every process of this node (its `ray start`, raylet, agents, workers); returns when."""
        t = time.monotonic()
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None
        return t

    stop = kill
