"""bench.report: tables and figures from the MLflow store (being split into modules; see analysis.py)."""

from bench.report.analysis import *  # noqa: F401,F403
from bench.report.analysis import main  # noqa: F401
