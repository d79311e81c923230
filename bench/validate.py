"""`python -m bench.validate`: run the benchmark on replicate data sets of known truth, and check what it finds.

    python -m bench.validate [--scenarios all|null,shared,histology,genomic,sparse] [--models snn,coxnet]
                             [--replicates R] [--seeds 1,2] [--cohorts blca,...] [--scale F] [--out DIR]
                             [--baseline DIR: the same study at another budget, set beside this one]

For each scenario, R synthetic data roots (`data_seed`: no two scenarios share a seed) are written under --data-dir
and reused once complete; each root's jobs (model x cohort x fold x seed) run through `bench.jobs.run_job`, the job function
of `bench.run`, into the MLflow experiment `validate-<scenario>`, tagged with the scenario and the replicate. A
rerun skips every finished job. `bench.validity` then judges the predictions, and --out receives Markdown and
CSV tables, one figure and a README.md with the verdicts, the budget and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench import validity  # noqa: E402
from bench.data import COHORTS, DataRoot, parse_cohorts  # noqa: E402
from bench.data.__main__ import patch_range  # noqa: E402
from bench.data.features import default_cache_bytes  # noqa: E402
from bench.data.synth import (DEFAULT_SCALE, FEATURE_DIM, MIN_TEST_EVENTS, SCENARIOS, params, scenario,  # noqa: E402
                              synthesize)
from bench.errors import BenchError, cli_main  # noqa: E402
from bench.jobs import Job, SweepSettings, job_key, load_cohort_data, run_job  # noqa: E402
from bench.profiles import PROFILES  # noqa: E402
from bench.report.tables import markdown_lines  # noqa: E402
from bench.run import DEFAULT_MAX_TOKENS, budget, parse_models  # noqa: E402
from bench.tracking import DEFAULT_TRACKING_URI, PREDICTIONS_ARTIFACT, Tracker, store_dir  # noqa: E402
from models import reads_slides  # noqa: E402

DEFAULT_MODELS = "abmil,transmil,clam_sb,ghanet,snn,coxnet"  # the WSI-only and genomic-only models the rules name
DEFAULT_REPLICATES = 10
POWER_EVENTS = (8, 16, 32)
POWER_NOISE = 1.0  # sd of the noise on the true log-risk (whose own sd is sqrt(2)): a gap of about 0.06 in C
EXPERIMENT_PREFIX = "validate-"
SEED_STRIDE = 1000  # data seeds per scenario: scenario i's replicates are SEED_STRIDE * i + r
FIGURE = "fpr_power.png"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.validate", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default="all", help=f"comma-separated, or all ({', '.join(SCENARIOS)})")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"as bench.run's --models (default {DEFAULT_MODELS}: the WSI-only and genomic-only models the "
                        "histology and genomic rules compare)")
    p.add_argument("--replicates", type=int, default=DEFAULT_REPLICATES,
                   help=f"data sets per scenario (default {DEFAULT_REPLICATES}); scenario i's replicate r has data seed "
                        f"{SEED_STRIDE} i + r")
    p.add_argument("--seeds", default="1,2",
                   help="training seeds per job (default 1,2; the first two give the model-against-itself null)")
    p.add_argument("--cohorts", default=",".join(COHORTS))
    p.add_argument("--folds", default="0,1,2,3,4", help="test folds run (the tests pair them; at least 2)")
    data = p.add_argument_group("data", "each replicate's synthetic root (bench.data synth's options)")
    data.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    data.add_argument("--min-test-events", type=int, default=MIN_TEST_EVENTS)
    data.add_argument("--dim", type=int, default=FEATURE_DIM)
    data.add_argument("--patches-per-slide", default="16-96", metavar="LO-HI")
    data.add_argument("--prognostic-fraction", type=float, default=None, help="the sparse scenario's (default 0.02)")
    data.add_argument("--data-dir", type=Path, default=Path("data/validate"),
                      help="where the replicate roots go: DIR/<scenario>/seed<r> (default data/validate)")
    run = p.add_argument_group("budget", "what each job spends (bench.run's options)")
    run.add_argument("--protocol", choices=["nested", "paper"], default="nested")
    run.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    run.add_argument("--epochs", type=int, default=None)
    run.add_argument("--trials", type=int, default=None)
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    power = p.add_argument_group("power", "the corrected t-test against a known gap, from the labels alone")
    power.add_argument("--power-events", default=",".join(map(str, POWER_EVENTS)),
                       help="deaths per test fold to measure power at (default 8,16,32)")
    power.add_argument("--power-noise", type=float, default=POWER_NOISE,
                       help=f"sd of the Gaussian noise added to the true log-risk (default {POWER_NOISE})")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    p.add_argument("--out", type=Path, default=Path("results/validate"))
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="another bench.validate --out of the same scenarios, replicates, cohorts, folds and seeds at "
                        "another budget: its replicate scores are set beside these, paired by replicate "
                        "(budget_comparison.csv and .md)")
    return p.parse_args(argv)


def _ints(text: str, what: str, low: int, high: int | None = None) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(v < low or (high is not None and v > high) for v in values):
        bound = f"{low}..{high}" if high is not None else f"{low} or more"
        raise BenchError(f"--{what} {text!r}: give comma-separated integers, each {bound}.")
    return values


@dataclass
class Study:
    """The parsed, checked options: what to run and where."""

    scenarios: list[str]
    models: list[str]
    replicates: int
    seeds: list[int]
    cohorts: list[str]
    folds: list[int]
    synth: dict  # synthesize()'s keyword arguments besides out, seed and scenario
    prognostic_fraction: float | None
    settings: SweepSettings  # the template; each replicate sets its root
    power_events: tuple[int, ...]
    power_noise: float
    uri: str
    data_dir: Path
    out: Path
    baseline: Path | None = None  # another budget's output on the same data: budget_comparison.{csv,md}


def study_from_args(args) -> Study:
    """Check every option before any work starts."""
    names = list(SCENARIOS) if args.scenarios.strip() == "all" else [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in names if s not in SCENARIOS]
    if bad or not names:
        raise BenchError(f"--scenarios {args.scenarios!r}: use all or comma-separated names from {', '.join(SCENARIOS)}.")
    if args.prognostic_fraction is not None:
        scenario("sparse", args.prognostic_fraction)
    if args.replicates < 1 or args.scale <= 0 or args.min_test_events < 0 or args.dim < 1 or args.power_noise <= 0:
        raise BenchError(f"--replicates {args.replicates}, --scale {args.scale}, --min-test-events {args.min_test_events}, "
                         f"--dim {args.dim}, --power-noise {args.power_noise}: give at least 1 replicate, a positive "
                         "scale, width and noise, and zero or more deaths per test fold.")
    folds = sorted(set(_ints(args.folds, "folds", 0, 4)))
    if len(folds) < 2:
        raise BenchError(f"--folds {args.folds!r}: the pairwise tests pair folds, so give at least 2.")
    profile, trials = budget(args)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu or auto.")
    models = parse_models(args.models)
    if args.baseline is not None and not (args.baseline / "replicate_scores.csv").is_file():
        raise BenchError(f"--baseline {args.baseline}: no replicate_scores.csv there. Give the --out folder of an "
                         "earlier bench.validate run of the same scenarios at another budget.")
    settings = SweepSettings(data="synthetic", root=DataRoot(args.data_dir), protocol=args.protocol, profile=profile,
                             trials=trials if args.protocol == "nested" else 0, device=device,
                             max_tokens=DEFAULT_MAX_TOKENS, cache_bytes=default_cache_bytes(), save_models=False,
                             reads_slides=any(reads_slides(m) for m in models))
    synth = {"scale": args.scale, "min_test_events": args.min_test_events, "dim": args.dim,
             "patches_per_slide": patch_range(args.patches_per_slide)}
    return Study(names, models, args.replicates, _ints(args.seeds, "seeds", 0), parse_cohorts(args.cohorts), folds,
                 synth, args.prognostic_fraction, settings, tuple(_ints(args.power_events, "power-events", 1)),
                 args.power_noise, args.tracking_uri, args.data_dir, args.out, args.baseline)


# --------------------------------------------------------------------------- replicate data and their jobs

def data_seed(name: str, rep: int) -> int:
    """Replicate `rep`'s data seed under scenario `name`, its own: with one seed, scenarios share draws by design
    (shared and histology the bags, shared, genomic and sparse the genes and labels), so models reading only those
    would repeat identical runs, and the null rates would count them more than once."""
    return SEED_STRIDE * list(SCENARIOS).index(name) + rep


def replicate_root(study: Study, name: str, rep: int, log=print) -> Path:
    """The replicate's synthetic root, written unless a complete one with the same settings is there
    (synth.json is written last, so its presence means the root is whole)."""
    seed = data_seed(name, rep)
    root = study.data_dir / name / f"seed{seed}"
    fraction = study.prognostic_fraction if name == "sparse" else None
    want = {**params(seed, **study.synth, scenario_name=name, prognostic_fraction=fraction), "cohorts": study.cohorts}
    stamp = root / "synth.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return root
    for folder in ("tables", "splits", "features", "truth"):  # slide names change with the settings
        shutil.rmtree(root / folder, ignore_errors=True)
    log(f"  writing {name} replicate {rep} to {root}")
    synthesize(root, study.cohorts, seed=seed, scenario_name=name, prognostic_fraction=fraction, log=lambda _: None,
               **study.synth)
    return root


@dataclass
class ReplicateRun:
    """What one replicate's jobs did now, and the predictions and compute seconds of its finished runs."""

    scenario: str
    replicate: int
    statuses: dict
    wall_seconds: float
    job_seconds: float
    predictions: list


def _finished_predictions(tracker: Tracker, key: str, tmp: str) -> tuple[pd.DataFrame, float] | None:
    run = tracker.finished_fold(key)
    if run is None:
        return None
    path = tracker.client.download_artifacts(run.info.run_id, PREDICTIONS_ARTIFACT, os.path.join(tmp, run.info.run_id))
    return pd.read_csv(path), run.data.metrics.get("job_seconds", float("nan"))


def run_replicate(study: Study, name: str, rep: int, tracker: Tracker, log=print) -> ReplicateRun:
    """Write (or reuse) the replicate's root, run its jobs (finished ones are skipped), read back their predictions."""
    t0 = time.perf_counter()
    root = replicate_root(study, name, rep, log)
    local = store_dir(study.uri) or Path("mlruns")
    settings = replace(study.settings, root=DataRoot(root), optuna_dir=local / "optuna" / tracker.experiment)
    statuses = {"finished": 0, "skipped": 0, "failed": 0}
    preds, job_seconds = [], 0.0
    tags = {"scenario": name, "replicate": str(rep)}
    with tempfile.TemporaryDirectory() as tmp:
        for cohort in study.cohorts:
            cd = load_cohort_data(settings, cohort)
            for model in study.models:
                for fold in study.folds:
                    for seed in study.seeds:
                        job = Job(model, cohort, fold, seed)
                        result = run_job(job, settings, tracker, cd, extra_tags=tags)
                        statuses[result.status] += 1
                        if result.status == "failed":
                            log(f"  FAILED {name} replicate {rep}: {model} {cohort} fold {fold} seed {seed}: "
                                f"{result.reason.strip().splitlines()[-1][:200] if result.reason else ''}")
                            continue
                        found = _finished_predictions(tracker, job_key(job, settings, cd), tmp)
                        if found is not None:
                            table, seconds = found
                            job_seconds += seconds
                            preds.append(table.assign(scenario=name, replicate=rep, model=model, cohort=cohort,
                                                      seed=seed, fold=fold))
            if cd.store is not None:
                cd.store.release()
    return ReplicateRun(name, rep, statuses, time.perf_counter() - t0, job_seconds, preds)


# --------------------------------------------------------------------------- outputs

def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _interval(mean, low, high) -> str:
    return f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}]" if np.isfinite(low) else _fmt(mean)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(markdown_lines([header, *rows], centred=False)) + "\n"


def expected_markdown(table: pd.DataFrame) -> str:
    rows = [[r.scenario, r.model, r.modality, str(r.replicates), _interval(r.mean_c, r.ci_low, r.ci_high), r.expected,
             {True: "yes", False: "**no**", None: "—"}[r.holds]] for r in table.itertuples()]
    return markdown(["scenario", "model", "reads at inference", "replicates", "mean C [95% replicate interval]",
                     "expected", "holds"], rows)


def fpr_markdown(rates: pd.DataFrame) -> str:
    rows = []
    for (null, name, test), part in rates.groupby(["null", "scenario", "test"], sort=False):
        cells = {r.adjust: f"{_fmt(r.rate)} [{_fmt(r.mc_low)}, {_fmt(r.mc_high)}] ({r.rejections}/{r.tests})"
                 for r in part.itertuples()}
        undefined = int(part["undefined"].iloc[0])
        rows.append([null, name, validity.TESTS[test], cells["raw"], cells["holm"], str(undefined)])
    return markdown(["null", "scenario", "test", "raw: rate [95% MC] (rejections/tests)", "after Holm", "undefined"], rows)


def power_markdown(power: pd.DataFrame) -> str:
    rows = [[str(r.events_per_fold), str(r.trials), _fmt(r.mean_gap_c),
             f"{_fmt(r.power)} [{_fmt(r.power_low)}, {_fmt(r.power_high)}] ({r.detections}/{r.trials})",
             *(f"{_fmt(getattr(r, f'fpr_{t}'))} [{_fmt(getattr(r, f'fpr_{t}_low'))}, {_fmt(getattr(r, f'fpr_{t}_high'))}]"
               for t in validity.TESTS)] for r in power.itertuples()]
    return markdown(["deaths per test fold", "trials", "mean gap in C", "power of the corrected t [95% MC]",
                     *(f"FPR {validity.TESTS[t]} (labels-only null)" for t in validity.TESTS)], rows)


def plot(power: pd.DataFrame, trained: list[tuple[str, float, pd.DataFrame]], path: Path, alpha: float) -> None:
    """Left: each test's raw false-positive rate against deaths per test fold (lines: the labels-only null; markers:
    the trained nulls at their own deaths per fold). Right: the corrected t's power against the known gap."""
    from matplotlib.lines import Line2D

    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    colors = dict(zip(validity.TESTS, ("#1b9e77", "#d95f02", "#7570b3")))
    markers = ("s", "^")
    x = power["events_per_fold"].to_numpy(dtype=float)
    for i, test in enumerate(validity.TESTS):
        shift = 1 + 0.025 * (i - 1)  # side by side, so the intervals do not hide each other
        rate = power[f"fpr_{test}"].to_numpy()
        err = [rate - power[f"fpr_{test}_low"].to_numpy(), power[f"fpr_{test}_high"].to_numpy() - rate]
        left.errorbar(x * shift, rate, yerr=err, color=colors[test], marker="o", capsize=3)
        for j, (_, events, rates) in enumerate(trained):
            r = rates[(rates["test"] == test) & (rates["adjust"] == "raw")].iloc[0]
            if r.tests:
                left.errorbar([events * shift * (1 + 0.01 * j)], [r.rate], yerr=[[r.rate - r.mc_low], [r.mc_high - r.rate]],
                              color=colors[test], marker=markers[j % 2], linestyle="none", capsize=3)
    handles = [Line2D([], [], color=c, marker="o", label=validity.TESTS[t]) for t, c in colors.items()]
    handles.append(Line2D([], [], color="grey", marker="o", label="noisy truth vs noisy truth (labels only)"))
    handles += [Line2D([], [], color="grey", marker=markers[j % 2], linestyle="none", label=null)
                for j, (null, _, _) in enumerate(trained)]
    left.axhline(alpha, color="grey", linestyle="--", linewidth=1)
    right.errorbar(x, power["power"], yerr=[power["power"] - power["power_low"], power["power_high"] - power["power"]],
                   marker="o", capsize=3, color="#444444")
    for xi, yi, gap in zip(x, power["power"], power["mean_gap_c"]):
        right.annotate(f"gap {gap:+.3f}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=7)
    ticks = sorted({*x, *(round(e) for _, e, _ in trained)})
    for ax in (left, right):
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set(xticks=ticks, xticklabels=[str(int(t)) for t in ticks], xlabel="deaths per test fold")
    left.set(ylabel=f"false-positive rate (p < {alpha}, raw)", ylim=(0, max(0.3, left.get_ylim()[1])),
             title="under a null")
    left.legend(handles=handles, fontsize=6, loc="upper right")
    right.set(ylabel="power of the corrected t", ylim=(0, 1.05), title="truth + noise against truth")
    fig.tight_layout()
    fig.savefig(path, dpi=150, metadata={"Software": None})
    plt.close(fig)


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small download per job
    study = study_from_args(args)
    t0 = time.perf_counter()
    per_replicate = len(study.models) * len(study.cohorts) * len(study.folds) * len(study.seeds)
    print(f"{len(study.scenarios)} scenario(s) x {study.replicates} replicate(s) x {per_replicate} jobs "
          f"({len(study.models)} models x {len(study.cohorts)} cohorts x {len(study.folds)} folds x {len(study.seeds)} "
          f"seeds); {study.settings.protocol} protocol, profile {study.settings.profile.name} "
          f"({study.settings.profile.epochs} epochs), {study.settings.trials} trials/job, device "
          f"{study.settings.device}; tracking {study.uri}, experiments {EXPERIMENT_PREFIX}<scenario>")
    runs = []
    for name in study.scenarios:
        tracker = Tracker(study.uri, EXPERIMENT_PREFIX + name)
        for rep in range(study.replicates):
            r = run_replicate(study, name, rep, tracker)
            runs.append(r)
            print(f"{name} replicate {rep}: {r.statuses['finished']} jobs run, {r.statuses['skipped']} already finished, "
                  f"{r.statuses['failed']} failed, in {r.wall_seconds:.1f} s (compute of its finished jobs: "
                  f"{r.job_seconds:.1f} s)", flush=True)
    tables = [p for r in runs for p in r.predictions]
    if not tables:
        raise BenchError("no job finished, so there is nothing to judge: every job failed (the reasons are above and on "
                         "their MLflow runs, tag failure_reason). Fix the cause and rerun the same command.")
    preds = pd.concat(tables, ignore_index=True)
    write_outputs(study, runs, preds, argv if argv is not None else sys.argv[1:], time.perf_counter() - t0)
    failed = sum(r.statuses["failed"] for r in runs)
    if failed:
        print(f"{failed} job(s) FAILED (reasons on their MLflow runs, tag failure_reason); the tables leave them out.",
              file=sys.stderr)
    return 1 if failed else 0


def write_outputs(study: Study, runs: list[ReplicateRun], preds: pd.DataFrame, argv: list[str], run_seconds: float):
    """The tables, the figure and README.md in --out."""
    out = study.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reps = validity.replicate_scores(preds).sort_values("scenario", key=lambda s: s.map(study.scenarios.index),
                                                       kind="stable")
    table, verdicts = validity.expected_vs_observed(reps)
    pvalues, rates, trained = [], [], []
    events = preds[preds["split"] == "test"].groupby(["scenario", "replicate", "cohort", "fold", "model", "seed"])["event"].sum()
    if "null" in study.scenarios:
        pv = validity.model_pair_pvalues(preds[preds["scenario"] == "null"])
        if len(pv):
            pvalues.append(pv.assign(null="null scenario: model vs model"))
            r = validity.rejection_rates(pv, ["scenario"]).assign(null="null scenario: model vs model")
            rates.append(r)
            trained.append(("null scenario, model vs model", float(events.loc["null"].mean()), r))
    pv = validity.seed_pair_pvalues(preds)
    if len(pv):
        pvalues.append(pv.assign(null="model vs itself, another seed"))
        rates.append(validity.rejection_rates(pv, ["scenario"]).assign(null="model vs itself, another seed"))
        trained.append(("model vs itself, another seed (all scenarios)", float(events.mean()),
                        validity.rejection_rates(pv, [])))
    trials = validity.label_trials(study.cohorts, study.replicates, study.power_events, study.power_noise)
    power = validity.power_table(trials)
    rates = pd.concat(rates, ignore_index=True) if rates else pd.DataFrame(
        columns=["null", "scenario", "test", "adjust", "rejections", "tests", "undefined", "rate", "mc_low", "mc_high"])
    rates = rates[["null", *[c for c in rates.columns if c != "null"]]]

    reps.to_csv(out / "replicate_scores.csv", index=False, float_format="%.6g")
    table.to_csv(out / "expected_vs_observed.csv", index=False, float_format="%.6g")
    (out / "expected_vs_observed.md").write_text(expected_markdown(table))
    rates.to_csv(out / "false_positive_rate.csv", index=False, float_format="%.6g")
    (out / "false_positive_rate.md").write_text(fpr_markdown(rates) if len(rates) else "no null was run\n")
    if pvalues:
        pd.concat(pvalues, ignore_index=True).to_csv(out / "pvalues.csv", index=False, float_format="%.6g")
    trials.to_csv(out / "power_trials.csv", index=False, float_format="%.6g")
    power.to_csv(out / "power.csv", index=False, float_format="%.6g")
    (out / "power.md").write_text(power_markdown(power))
    plot(power, trained, out / FIGURE, validity.ALPHA)
    timing = pd.DataFrame([{"scenario": r.scenario, "replicate": r.replicate, **{f"jobs_{k}": v for k, v in r.statuses.items()},
                            "wall_seconds": round(r.wall_seconds, 1), "job_seconds": round(r.job_seconds, 1)} for r in runs])
    timing.to_csv(out / "timings.csv", index=False)
    budget_text = ""
    if study.baseline is not None:
        # keep_default_na off: pandas would read the scenario name "null" as a missing value
        there = pd.read_csv(study.baseline / "replicate_scores.csv", keep_default_na=False, na_values=[""])
        try:
            comparison = validity.budget_comparison(reps, there)
        except ValueError as e:
            raise BenchError(f"--baseline {study.baseline}: {e}. Its README.md gives the command that made it.") from None
        comparison.to_csv(out / "budget_comparison.csv", index=False, float_format="%.6g")
        budget_text = budget_markdown(comparison, study.baseline)
        (out / "budget_comparison.md").write_text(budget_text)
    readme(study, runs, table, verdicts, rates, power, timing, argv, run_seconds, time.perf_counter() - t0,
           budget_text)
    print("verdicts: " + "; ".join(f"{s} {v[0]}" for s, v in verdicts.items()) + f"\nwrote {out}/README.md and its tables")


def budget_markdown(comparison: pd.DataFrame, baseline: Path) -> str:
    """The budget comparison's table: mean C at both budgets, the paired difference and the ranks."""
    rows = [[r.scenario, r.model, str(r.replicates), _fmt(r.mean_c_here), _fmt(r.mean_c_there),
             _interval(r.difference, r.diff_low, r.diff_high),
             "" if pd.isna(r.rank_here) else f"{r.rank_there} -> {r.rank_here}"]
            for r in comparison.itertuples()]
    return (f"Against `{baseline.name}/` (the same data seeds, cohorts, folds and training seeds at another budget): "
            "mean C over the replicates both ran, the paired difference this budget - that one with its 95% "
            "replicate interval, and the model's rank within its scenario there -> here (1 = highest).\n\n"
            + markdown(["scenario", "model", "replicates", "mean C here", "mean C there", "difference [95%]",
                        "rank there -> here"], rows))


def readme(study, runs, table, verdicts, rates, power, timing, argv, run_seconds, stats_seconds,
           budget_text="") -> None:
    s = study.settings
    jobs = {k: sum(r.statuses[k] for r in runs) for k in ("finished", "skipped", "failed")}
    first = study.data_dir / study.scenarios[0] / f"seed{data_seed(study.scenarios[0], 0)}"
    patients = {c: int(len(pd.read_csv(DataRoot(first).truth(c))))
                for c in study.cohorts}
    fpr_text = fpr_markdown(rates) if len(rates) else "No null was run (it needs the null scenario, or two seeds).\n"
    text = f"""# Validity of the benchmark on data of known truth

`python -m bench.validate {' '.join(argv)}`

## Set-up and budget

- Scenarios: {', '.join(study.scenarios)}; **R = {study.replicates}** replicate data sets each (scenario i's replicate r has data seed {SEED_STRIDE} i + r, so no two scenarios share a draw).
- Models: {', '.join(study.models)}; training seeds {', '.join(map(str, study.seeds))}; cohorts {', '.join(study.cohorts)} ({', '.join(f'{c} {n}' for c, n in patients.items())} patients in replicate 0); folds {', '.join(map(str, study.folds))}.
- Data: scale {study.synth['scale']}, at least {study.synth['min_test_events']} deaths per test fold, width {study.synth['dim']}, {study.synth['patches_per_slide'][0]}-{study.synth['patches_per_slide'][1]} patches per slide.
- Budget per job: {s.protocol} protocol, profile {s.profile.name} ({s.profile.epochs} epochs, a step per {s.profile.grad_accum} patients), {s.trials} Optuna trial(s), device {s.device}, {s.threads_per_job} torch thread(s).
- Jobs: {sum(jobs.values())} in all; this invocation ran {jobs['finished']}, found {jobs['skipped']} finished before, {jobs['failed']} failed.
- Wall time of this invocation: {run_seconds + stats_seconds:.0f} s ({run_seconds:.0f} s data and jobs, {stats_seconds:.0f} s statistics); compute of all finished jobs (their job_seconds): {timing['job_seconds'].sum():.0f} s. Per replicate: `timings.csv`.

## Verdicts

| scenario | verdict | rule |
|---|---|---|
""" + "".join(f"| {name} | **{v}** | {rule} |\n" for name, (v, rule) in verdicts.items()) + f"""
## Expected versus observed

Mean C: each replicate's mean per-fold Harrell C over cohorts, folds and seeds; the interval is the 95% t interval
over replicates. `oracle`: the true risk on the same test folds.

{expected_markdown(table)}
## False-positive rates

A rejection is p < {validity.ALPHA}. Holm's family is one replicate's comparisons (all pairs of models on all its
cohorts for the null scenario, as one report table; all models x cohorts for the model against itself). The model
against itself compares its first two training seeds (per-fold C paired by fold); a deterministic model gives
identical folds (p = 1). Undefined tests (too few folds with a C) are left out of the rate. The Monte Carlo interval
is Wilson's; comparisons within a replicate share data, so it is a guide, not exact.

{fpr_text}
## Power

From the `shared` scenario's labels, truth and folds alone (no training): per replicate (data seed r) and cohort, at
the fewest patients that hold that many deaths per test fold, the true log-risk plus N(0, {study.power_noise}²) noise
against the true log-risk, by the corrected t-test (a detection: p < {validity.ALPHA} with the right sign). The
FPR columns test two such noisy copies against each other (a labels-only null, all three tests, raw).

{power_markdown(power)}
![false-positive rate and power against deaths per test fold]({FIGURE})
""" + (f"""
## Budget sensitivity

{budget_text}""" if budget_text else "") + f"""

Files: `expected_vs_observed.{{csv,md}}`, `replicate_scores.csv`, `false_positive_rate.{{csv,md}}`, `pvalues.csv`,
`power.{{csv,md}}`, `power_trials.csv`, `timings.csv`, `{FIGURE}`{', `budget_comparison.{csv,md}`' if budget_text else ''}.
"""
    (study.out / "README.md").write_text(text)


main = cli_main(_main)

if __name__ == "__main__":
    raise SystemExit(main())
