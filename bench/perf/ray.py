"""`python -m bench.perf ray`: what a private Ray costs before any job (start-up, memory, task latency, stop).

Needs the ray extra.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _pid() -> int:
    return os.getpid()


def _descendants_rss(pid: int) -> tuple[int, int]:
    """Number and summed resident memory (bytes) of a process's descendants, read from Linux's /proc."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    rss = 0
    for p in found:
        try:
            rss += int(next(l for l in Path(f"/proc/{p}/status").read_text().splitlines() if l.startswith("VmRSS")).split()[1])
        except (OSError, StopIteration):
            continue
    return len(found), rss * 1024


def ray_overhead(num_cpus: int = 2, n_tasks: int = 200) -> str:
    """What `--executor ray` costs before any job: a private Ray's start, memory, task round trip, stop."""
    from bench.ray_executor import import_ray

    ray = import_ray()
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    t_init = time.perf_counter() - t0
    task = ray.remote(_pid)
    t0 = time.perf_counter()
    ray.get(task.remote())  # Ray prestarts its workers; the first task still registers the function
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get([task.remote() for _ in range(n_tasks)])
    t_task = (time.perf_counter() - t0) / n_tasks
    n_procs, rss = _descendants_rss(os.getpid())
    t0 = time.perf_counter()
    ray.shutdown()
    t_stop = time.perf_counter() - t0
    return (f"private Ray ({num_cpus} CPUs): ray.init {t_init:.1f} s; first task {t_first:.2f} s; "
            f"then {t_task * 1e3:.1f} ms per empty task ({n_tasks} in flight); {n_procs} Ray processes holding "
            f"{rss / 2**20:.0f} MiB RSS; ray.shutdown {t_stop:.1f} s")


def add_parser(sub) -> None:
    sub.add_parser("ray", help="start-up time, memory and task latency of a private Ray (needs the ray extra)").set_defaults(func=main)


def main(args) -> int:
    print(ray_overhead())
    return 0
