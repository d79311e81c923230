"""`python -m bench.perf`."""

from bench.perf.cli import run

if __name__ == "__main__":
    raise SystemExit(run())
