"""`python -m bench.perf <benchmark>`: one subcommand per module of the package."""

from __future__ import annotations

import argparse

from bench.errors import cli_main
from bench.perf import io, models, ray, sweep, transmil

BENCHMARKS = (models, transmil, ray, io, sweep)  # the order of --help


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description="Timings of the suite on this machine.")
    sub = parser.add_subparsers(dest="command", required=True)
    for benchmark in BENCHMARKS:
        benchmark.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


run = cli_main(main)
