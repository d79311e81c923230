"""Nested protocol: an Optuna study per (model, cohort, fold, seed) on an inner split of the outer training fold.

The inner split is carved from the outer training patients (stratified by event and bin); bins
and the genomic scaler are fitted on the inner training part; trials are pruned on the inner
C-index per epoch. The outer `val` fold is never read here. Studies live in a journal file, so an
interrupted study resumes: RUNNING trials of a dead attempt are marked FAIL and only the remaining
budget (COMPLETE + PRUNED count) is run. A trial whose training fails or whose inner-val C is undefined
returns NaN, which Optuna records as FAIL, with the reason in the trial's `failure` attribute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from bench.errors import BenchError
from bench.fold import PatientSet
from bench.splits import make_splits
from bench.survival import c_index
from bench.train import TrainingError, TrainSettings, fit, predict
from models import get_model_class

optuna.logging.set_verbosity(optuna.logging.WARNING)


def inner_split(outer_train: PatientSet, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (inner train, inner val) of the outer training side, stratified by event and bin."""
    n_folds = max(2, round(1 / fraction))
    folds = make_splits(np.arange(len(outer_train)), outer_train.event, outer_train.bins, n_folds=n_folds, seed=seed)
    train, val = folds[0]
    return [int(i) for i in train], [int(i) for i in val]


def check_storage(url: str) -> None:
    """Reach the Optuna database of --optuna-storage once before any job, and create its tables there: jobs
    that start together on a fresh database would otherwise race to create them (PostgreSQL refuses the
    second CREATE). A database that cannot be reached is one paragraph, not a failure per job."""
    try:
        import sqlalchemy

        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read: Optuna's own message below names the problem
        shown = url.split("@")[-1]
    try:
        optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}).engine.dispose()
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise BenchError(f"--optuna-storage {shown}: the Optuna database cannot be reached or set up "
                         f"({type(err).__name__}: {reason}). Start the database server and create the database "
                         "first (PostgreSQL: createdb NAME; the URL is postgresql://USER[:PASSWORD]@HOST:PORT/NAME, "
                         "with the psycopg driver installed: pip install -e '.[cluster]'), or leave --optuna-storage "
                         "out for a journal file per job beside the MLflow store.") from None


def open_study(storage: Path | str, name: str, seed: int) -> optuna.Study:
    """Load or create the job's study; trials left RUNNING by a dead attempt become FAIL.

    `storage` is a journal file (the default: one per job, beside the MLflow store) or a database
    URL such as `postgresql://...` that every node of a cluster can reach. The job owns its study,
    so failing its RUNNING trials cannot hit another worker's trial.
    """
    if isinstance(storage, str) and "://" in storage:
        storage = optuna.storages.RDBStorage(storage)
    else:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1),
    )
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def tune(model: str, make_inner: Callable[[], tuple[PatientSet, PatientSet]], base_params: dict, settings: TrainSettings,
         n_trials: int, study: optuna.Study, progress: Callable[[str], None] = lambda s: None) -> tuple[dict, pd.DataFrame]:
    """Run the remaining trials; returns the best params (defaults overlaid) and the trials table."""
    cls = get_model_class(model)
    inner_train, inner_val = make_inner()
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]

    def objective(trial: optuna.Trial) -> float:
        space = cls.search_space(trial)
        trial.set_user_attr("params", space)
        params = {**base_params, **space}
        trial_settings = TrainSettings.from_params(params, seed=settings.seed, micro_batch=settings.micro_batch,
                                                   device=settings.device, precision=settings.precision,
                                                   max_tokens=settings.max_tokens)
        last = {"c": float("nan")}

        def on_epoch(epoch, m):
            pred = predict(m, inner_val, trial_settings)
            c = c_index(pred["time"], pred["event"], pred["risk"])
            last["c"] = c
            progress(f"trial {trial.number + 1}/{n_trials} epoch {epoch + 1}/{trial_settings.epochs}")
            if not math.isnan(c):
                trial.report(c, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        try:
            fit(model, inner_train, params, trial_settings, on_epoch)
        except TrainingError as err:
            trial.set_user_attr("failure", str(err))
            return float("nan")  # Optuna records a NaN objective as a failed trial
        if math.isnan(last["c"]):  # scoring it 0.5 would tie every such trial and let the first one win
            trial.set_user_attr("failure", "inner-val C-index undefined (no comparable pair in the inner val split)")
        return last["c"]

    remaining = max(0, n_trials - len(done))
    if remaining:
        study.optimize(objective, n_trials=remaining, catch=())
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        reasons = sorted({t.user_attrs.get("failure", "") for t in study.trials} - {""})
        raise TrainingError(f"{model}: every tuning trial failed or was pruned"
                            + (f" ({'; '.join(reasons)})" if reasons else ""))
    best = max(finished, key=lambda t: t.value)
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
    return {**base_params, **best.user_attrs["params"]}, table
