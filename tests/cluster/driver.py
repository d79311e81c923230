"""`python -m bench.run`, with one addition for the cluster tier: the first tuning trial that starts on the Ray node
`--hold-node` writes `--hold-dir/<model>-<fold>` and then waits, so that the test kills that node at a known point.

    python tests/cluster/driver.py --hold-node NODE_ID --hold-dir DIR -- <bench.run arguments>

Everything else is bench.run's CLI as is. The hook rides on `RayExecutor(job_progress=...)`, the per-epoch
progress the executor already forwards from its tasks; functions of this script (`__main__`) travel to the
tasks by value.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def hold_on(node_id: str, folder: str):
    def hook(job, text: str) -> None:
        import ray

        if text.startswith("trial ") and ray.get_runtime_context().get_node_id() == node_id:
            held = Path(folder)
            if not any(held.iterdir()):
                (held / f"{job.model}-{job.fold}").write_text(f"{os.getpid()}\n")
                time.sleep(3600)  # until the test kills this node
    return hook


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hold-node", required=True)
    p.add_argument("--hold-dir", required=True)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest

    import bench.ray_executor
    from bench.run import main as run_main

    init = bench.ray_executor.RayExecutor.__init__

    def with_hold(self, *a, **kw):
        init(self, *a, **kw)
        self.job_progress = hold_on(args.hold_node, args.hold_dir)

    bench.ray_executor.RayExecutor.__init__ = with_hold
    return run_main(rest)


if __name__ == "__main__":
    sys.exit(main())
