"""The embedded default, end to end (what `./reproduce.sh` runs).

Generates the synthetic cohorts if missing, sweeps all models x cohorts x folds under the nested
protocol with the quick profile, writes the report to `results/`, and prints the wall time and
its breakdown. Rerunning resumes: finished jobs are skipped.
"""

from __future__ import annotations

import os
import time

from bench import report
from bench import run as bench_run
from bench.errors import cli_main


def _main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    t0 = time.perf_counter()
    status = bench_run.main(list(argv or []))
    t_sweep = time.perf_counter() - t0
    if status == 2:
        return status
    t1 = time.perf_counter()
    # the mission's five: `--models extended` runs may share the experiment (results/extended/ reports all)
    report_status = report.main(["--experiment", "synthetic-nested", "--out", "results", "--models", "default"])
    t_report = time.perf_counter() - t1
    print(f"\nembedded default: sweep {t_sweep:.1f} s + report {t_report:.1f} s = {time.perf_counter() - t0:.1f} s wall")
    return status or report_status


main = cli_main(_main)

if __name__ == "__main__":
    raise SystemExit(main())
