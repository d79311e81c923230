"""MLflow tracking: where runs live and the fixed names every run carries.

Fold runs are children of one parent run per (model, cohort); the report reads only fold runs
(tag `run_kind=fold`, status FINISHED) and their `predictions.csv` artifact.
"""

from __future__ import annotations

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlruns/artifacts"

RUN_KIND = "run_kind"            # tag: "parent" | "fold" | "report"
PREDICTIONS_ARTIFACT = "predictions.csv"
FOLD_TAGS = ("model", "cohort", "fold", "protocol", "data", "seed", "split_sha256", "git_commit")


def default_experiment(data: str, protocol: str) -> str:
    """Experiment name derived from the data source and protocol, e.g. `synthetic-nested`."""
    return f"{data}-{protocol}"
