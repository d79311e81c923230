"""A fold model saved with its run, so new patients can be scored later (`python -m bench.predict`).

Two files, nothing that loading would unpickle: `weights.pt` holds the state dict (`torch.save`, read back
with `weights_only=True`), `model.json` the rest: the model name and what `create_model` got (input
sizes, hyperparameters, what `prepare` fitted on the training fold, e.g. G-HANet's gene masks), the bin
edges, the genomic scaler (per group: column names, mean, std), the run's params, how the job scored
(micro-batch, token budget, precision), the feature width and the suite version that trained it. Arrays
travel as lists with their dtype, so a float32 scaler comes back bit for bit and the reloaded model scores
as the job did.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError
from bench.fold import OmicScaler
from models import create_model
from models.base import SurvivalModel

ARTIFACT_DIR = "model"  # the fold run's artifact folder that holds the two files
WEIGHTS = "weights.pt"
SPEC = "model.json"
FORMAT = 1


@dataclass
class SavedModel:
    """A reloaded fold model and the fold's transforms, as the job scored its patients."""

    name: str
    model: SurvivalModel
    edges: np.ndarray
    scaler: OmicScaler
    omic_groups: list[list[str]]  # column names per gene group, in the scaler's order
    params: dict
    scoring: dict  # micro_batch, max_tokens, precision, feature_precision: as the job scored
    feature_dim: int | None  # None: the model reads no slide features
    suite_version: str


def _plain(value):
    """JSON-ready: numpy arrays and scalars become lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _array(a) -> dict:
    """An array with its dtype: float32 -> JSON (float64 text) -> float32 is exact."""
    a = np.asarray(a)
    return {"dtype": str(a.dtype), "values": a.tolist()}


def _from_array(d: dict) -> np.ndarray:
    return np.asarray(d["values"], dtype=d["dtype"])


def pack(name: str, model: SurvivalModel, kwargs: dict, edges: np.ndarray, scaler: OmicScaler,
         omic_groups, params: dict, scoring: dict, feature_dim: int | None, suite_version: str) -> dict[str, bytes]:
    """The saved model's files as bytes: plain data, so a worker process can hand them to the driver that logs them.

    `scoring`: how the job scored (micro_batch, max_tokens, precision, feature_precision), so a rescore of the
    same patients cuts the same padded passes and gets the same numbers.
    """
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    spec = {
        "format": FORMAT, "model": name, "model_kwargs": _plain(kwargs), "bin_edges": _plain(np.asarray(edges)),
        "scaler": [{"columns": list(cols), "mean": _array(m), "std": _array(s)}
                   for cols, m, s in zip(omic_groups, scaler.mean, scaler.std, strict=True)],
        "params": _plain(params), "scoring": scoring, "feature_dim": feature_dim, "suite_version": suite_version,
    }
    return {WEIGHTS: buf.getvalue(), SPEC: json.dumps(spec).encode()}


def load(folder: Path, where: str = "") -> SavedModel:
    """Rebuild the model from `model.json`, fill it from `weights.pt`; `where` names the run in errors."""
    folder = Path(folder)
    where = where or str(folder)
    try:
        spec = json.loads((folder / SPEC).read_text())
        state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:  # weights_only refuses any object
        raise BenchError(f"the saved model of {where} cannot be read ({type(err).__name__}: "
                         f"{str(err).strip().splitlines()[0][:300]}). Its files "
                         f"{SPEC} and {WEIGHTS} are incomplete or damaged: rerun the job into a new experiment "
                         "(python -m bench.run ... --experiment NEW) to save it again.") from None
    if spec.get("format") != FORMAT:
        raise BenchError(f"the saved model of {where} has format {spec.get('format')!r}; this suite reads format "
                         f"{FORMAT}. Score it with the suite version that saved it ({spec.get('suite_version')}).")
    try:
        model = create_model(spec["model"], **spec["model_kwargs"])
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as err:
        raise BenchError(f"the saved {spec['model']} model of {where} does not fit the model this suite version builds "
                         f"({str(err).splitlines()[0][:300]}). It was saved by suite version {spec['suite_version']}: "
                         "score it with that version of the code.") from None
    scaler = OmicScaler.from_stats([_from_array(g["mean"]) for g in spec["scaler"]],
                                   [_from_array(g["std"]) for g in spec["scaler"]])
    return SavedModel(spec["model"], model.eval(), np.asarray(spec["bin_edges"], dtype=float), scaler,
                      [g["columns"] for g in spec["scaler"]], spec["params"], spec["scoring"], spec["feature_dim"],
                      spec["suite_version"])
