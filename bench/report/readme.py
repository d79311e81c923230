"""The output folder's README.md: what each file there is, how to read the table, how the runs and the report were
made, and what the table does and does not show.

Written by the report from the same runs as every other file, so it never goes stale and a rerun writes the same
bytes (nothing in it is the report's own clock). Hand-written findings go in NOTES.md beside it: the report links
to it and never touches it, and it refuses to overwrite a README.md it did not write.
"""

from __future__ import annotations

from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.report.analysis import (ORACLE, OURS, PUBLISHED, PUBLISHED_LABEL, SIGNIFICANCE, CIndexTable, Results,
                                   cohort_order, display, experiment_facts)
from bench.report.store import mixed_settings
from bench.report.tables import markdown_lines, table_rows
from models import list_models, reads_slides

README, NOTES = "README.md", "NOTES.md"
MARKER = "<!-- written by `python -m bench.report`: a rerun rewrites this file; hand-written notes go in NOTES.md -->"

# every file the report writes, in the order the README lists them: a file missing here stops the report
FILES = {
    README: "this file",
    "cindex_table.md": "the C-index table shown above, with its full caption (what every mark and row rests on)",
    "cindex_table.csv": "the same table as CSV (cells as text: `mean ± std`, † and `(k/n folds)` included)",
    "cindex_table.tex": "the same table for LaTeX",
    "calibration_table.md": "calibration per model and cohort: integrated Brier score (IBS, lower is better), Brier "
                            "skill score against the training fold's Kaplan-Meier curve (BSS, above 0 is better than "
                            "it), td-AUC, D-calibration rejections (k/n fold runs); the Kaplan-Meier reference row; "
                            "its caption says how each is computed",
    "calibration_table.csv": "the same table as CSV",
    "cindex_summary.csv": "per model and cohort: mean and std of the C-index and of Uno's IPCW C, the calibration "
                          "means, D-calibration folds rejected and tested, the pooled out-of-fold C with its "
                          "bootstrap 95% CI, the Kaplan-Meier groups' sizes and log-rank p",
    "pairwise_tests.csv": "every pairwise test behind the † marks: per cohort and pair, the corrected t-test over "
                          "folds (`t_corrected_p`, `holm_p`), the mean fold difference, the paired bootstrap of the "
                          "pooled C, the Wilcoxon p; `comparison` is `ours` or `published`",
    "calibration_folds.csv": "per fold run: IBS, the Kaplan-Meier reference IBS, skill, td-AUC, D-calibration "
                             "chi-square, p and Benjamini-Hochberg p over the table",
    "calibration_groups.csv": "the calibration figures' numbers: per cohort and model, risk groups at the horizon "
                              "with predicted and observed (Kaplan-Meier, 95% interval) survival",
    "calibration/*.png": "per cohort, predicted against observed survival at the horizon t* (the median training "
                         "follow-up), one panel per model",
    "km_grid.png": "every Kaplan-Meier panel: cohorts as rows, models as columns",
    "km/*.png": "per cohort and model, Kaplan-Meier curves of the test patients pooled over folds, split at their "
                "fold model's median training risk, with 95% bands, log-rank p and numbers at risk",
    "fold_cindex.png": "every fold's C-index by cohort and model (dots), the mean (lines), the oracle where known",
    "ranks.png": "mean rank of each model over cohorts, with the Friedman test and Nemenyi critical difference",
}

# what the table shows, by the runs' `data` tag: (what the numbers are, the caveat line)
SHOWS = {
    "synthetic": ("**Synthetic data.** The cohorts are generated (`python -m bench.data synth`) in the real file "
                  "formats and split layout, with survival drawn from a known risk (the oracle row is its C-index). "
                  "The table ranks the models on this generator, and checks the pipeline and its statistics end to "
                  "end; it says nothing about how the models rank on real patients.",
                  "Do not quote these numbers as TCGA results."),
    "semisynthetic": ("**Semi-synthetic data.** The real TCGA tables, labels and splits, with slide features "
                      "simulated from each patient's genomic profile. Slide-free models' numbers are real-table "
                      "numbers; slide models' numbers rest on simulated bags.",
                      "The slide models' numbers are no evidence about real slides."),
    "tcga": ("**Real data.** The public TCGA tables and the MCAT splits, with the slide features this site "
             "extracted (each run's `features_dir`, `features_width` and `features_hash` tags).",
             "Slide models' numbers depend on the feature extractor: compare them only with runs on the same "
             "features."),
}
TCGA_NO_SLIDES = ("**Real data, no slides.** The public TCGA tables (labels, clinical covariates, genomics) and the "
                  "MCAT splits; no model here reads slide features, so these are real numbers for these models on "
                  "these cohorts.",
                  "They are the floor a slide model must clear on these splits; they say nothing about slide models.")


def check_writable(out: Path) -> None:
    """Refuse an --out whose README.md a person wrote (the report would overwrite it), before any work."""
    path = out / README
    if path.is_file() and not path.read_text(encoding="utf-8").startswith(MARKER):
        raise BenchError(f"{path} was not written by bench.report, which writes its own README.md there. Move it to "
                         f"{out / NOTES} (the report links to NOTES.md and leaves it alone) or delete it, then rerun.")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h} h {m:02d} min {s % 60:02d} s" if h else f"{m} min {s % 60:02d} s" if m else f"{s} s"


def _utc(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _values(runs: pd.DataFrame, column: str) -> str:
    """The distinct values of a tag with their run counts where there are several: `a` (3 runs), `b` (1 run)."""
    if column not in runs:
        return "not recorded"
    counts = runs[column].astype(str).value_counts().sort_index()
    if len(counts) == 1:
        return f"`{counts.index[0]}`"
    return ", ".join(f"`{v}` ({n} run{'s' if n > 1 else ''})" for v, n in counts.items())


def _reads_slides(model: str) -> bool:
    return model not in list_models() or reads_slides(model)  # a model unknown here is not called slide-free


def _reading(res: Results, table: CIndexTable, facts: dict) -> list[str]:
    """How to read the table: each mark and extra row, with this table's own numbers."""
    n_folds, n_seeds = len(facts["folds"]), len(facts["seeds"])
    cells = [v for (row, _), v in table.cells.items() if row != ORACLE and PUBLISHED_LABEL not in row]
    ours = res.pairwise[res.pairwise["comparison"] == OURS]
    theirs = res.pairwise[res.pairwise["comparison"] == PUBLISHED]
    daggers = sum(1 for *_, worse in cells if worse)
    span = res.scores.groupby("cohort")["n_events_test"].agg(["min", "max"]).reindex(cohort_order(res.scores["cohort"]))
    events = ", ".join(f"{c.upper()} {lo}" if lo == hi else f"{c.upper()} {lo}-{hi}" for c, lo, hi in span.itertuples())
    out = [f"- **A cell** is Harrell's C-index on the held-out test fold, mean ± population std over "
           f"{_n(n_folds, 'fold')} × {_n(n_seeds, 'seed')}: 0.5 ranks patients at "
           "random, 1 ranks every comparable pair right. *Overall mean* averages a row over cohorts; *mean rank* "
           "ranks the models within each cohort (1 = best) and averages over cohorts.",
           "- **Bold** is the best mean of its cohort. It is a position, not a test.",
           f"- **†** marks a model worse than its cohort's best at p < {SIGNIFICANCE} by the Nadeau-Bengio corrected "
           f"paired t-test over folds (each model's C averaged over seeds within a fold, so df = folds - 1), "
           f"Holm-corrected over one family: the {_n(len(ours), 'pairwise comparison')} among our models in "
           f"`pairwise_tests.csv` (`comparison` = `ours`). "
           + (f"{_n(daggers, 'cell')} here {'carries' if daggers == 1 else 'carry'} one. " if daggers
              else "No cell here carries one. ")
           + "A cell without † is not shown to be as good as the best, only not shown to be worse: with few folds "
             "the test needs a large, steady gap.",
           f"- **Events per test fold**: {events}. A fold's C rests on its deaths, so a cohort with few has a "
           "noisy column (a large std)."]
    if ORACLE in table.rows:
        out.append(f"- **{ORACLE}** is the C-index of the generator's true risk on the same folds: the ceiling. A "
                   "model near it has found the signal; the gap below it is what is left to learn.")
    if table.partial:
        where = ", ".join(f"{row} on {cohort.upper()} ({k})" for (row, cohort), k in sorted(table.partial.items()))
        out.append(f"- **k/n folds** after a cell: it rests on k of the table's n folds (a job did not finish): "
                   f"{where}.")
    else:
        out.append(f"- **k/n folds** would follow a cell resting on fewer folds than the others; here every cell "
                   f"rests on all {n_folds}.")
    if res.published is not None and len(res.published):
        ours_ran = ("ours here ran under the same paper protocol, rerun by this suite" if facts["protocol"] == "paper"
                    else f"ours here ran under the {facts['protocol']} protocol, so a difference mixes model and "
                         "protocol")
        out.append(f"- **Rows marked {PUBLISHED_LABEL}** are MCAT's released per-fold val C-indices on the same "
                   "splits and folds, read from the release, not rerun. Their protocol is the publication's: scored "
                   "after the last (20th) epoch, bins cut on the whole cohort (the scored fold included), one seed; "
                   f"{ours_ran}. `pairwise_tests.csv` tests each of our models against each of them (`comparison` = "
                   f"`published`), Holm-corrected as a family of its own ({len(theirs)} comparisons); no † comes "
                   "from them.")
    elif res.published is not None:
        out.append("- **Published rows** (MCAT's released per-fold C on these splits) are missing: `python -m "
                   "bench.data fetch --out <data root>` downloads them, and a rerun of the report adds them.")
    if mixed := mixed_settings(res.runs):
        out.append(f"- **Mixed settings** (built with `--allow-mixed`): {'; '.join(mixed)}.")
    return out


def _data_kind(res: Results, facts: dict) -> tuple[str, str]:
    """(what the numbers are, the caveat line), chosen by the runs' data tag and whether a model reads slides."""
    data = facts["data"]
    if data == "tcga" and not any(map(_reads_slides, res.runs["model"].unique())):
        return TCGA_NO_SLIDES
    return SHOWS.get(data, (f"**Data: {data}.**", "What these numbers stand for depends on that data."))


def _shows(res: Results, facts: dict) -> list[str]:
    what, caveat = _data_kind(res, facts)
    return [what, "", f"**Caveat:** {caveat}", "",
            f"Every test here has the power of {_n(len(facts['folds']), 'fold')} and "
            f"{_n(res.summary['cohort'].nunique(), 'cohort')}: a difference the table does not mark may still be real, "
            "and one it marks may be specific to these splits. The bootstrap p in `pairwise_tests.csv` is conditional "
            "on the fitted fold models and uncorrected."]


def _made(runs: pd.DataFrame, experiment: str, command: str, facts: dict) -> list[str]:
    """How the runs and this report were made, measured from the runs themselves."""
    n = len(runs)
    shape = " × ".join([_n(runs["model"].nunique(), "model"), _n(runs["cohort"].nunique(), "cohort"),
                        _n(len(facts["folds"]), "fold"), _n(len(facts["seeds"]), "seed")])
    recorded = [f"{what} {_values(runs, tag)}" for tag, what in (("device", "device"), ("precision", "precision"),
                                                                   ("cpu_threads", "torch threads per job"))
                if tag in runs]
    out = [f"- **Runs:** the {n} fold runs of MLflow experiment `{experiment}` ({shape}; the latest finished run "
           f"of each job): protocol `{facts['protocol']}`, profile `{facts['profile']}`"
           + (f" ({facts['epochs']} epochs)" if facts["epochs"] != "n/a" else "")
           + f", Optuna trials per job `{facts['trials']}`, data `{facts['data']}`"
           + "".join(f", {r}" for r in recorded) + ".",
           f"- **Suite version** the runs carry: {_values(runs, 'suite_version')} (the commit of each run is its "
           "`git_commit` tag)."]
    if "table_variant" in runs and facts["data"] != "synthetic":
        variants = runs.groupby("cohort")["table_variant"].first().reindex(cohort_order(runs["cohort"]))
        out.append("- **Tables read:** " + ", ".join(f"{c.upper()} `{v}`" for c, v in variants.items()) + ".")
    seconds = runs["job_seconds"] if "job_seconds" in runs else pd.Series(np.nan, index=runs.index)
    timed = seconds.notna()
    if timed.any():
        by_model = runs[timed].groupby("model")["job_seconds"].sum().sort_values(ascending=False, kind="stable")
        missing = f" ({_n(n - int(timed.sum()), 'run')} logged none)" if not timed.all() else ""
        out.append(f"- **Compute:** {_duration(seconds[timed].sum())} summed over the runs' `job_seconds`{missing}; "
                   "by model: " + ", ".join(f"{display(m)} {s:,.0f} s" for m, s in by_model.items()) + ".")
    if {"start_time", "end_time"} <= set(runs) and runs["start_time"].notna().any():
        first, last = runs["start_time"].min(), runs["end_time"].max()
        out.append(f"- **Wall time:** {_duration((last - first) / 1000)} from the first run's start "
                   f"({_utc(first)}) to the last run's end ({_utc(last)}); it includes any pause between sweeps "
                   "into the experiment.")
    out.append(f"- **This report:** `{command}`. Rerun it to rewrite every file here; the same runs give the same "
               "bytes.")
    return out


def _files(out: Path, written: list[Path]) -> list[str]:
    """One line per kind of file, naming every file of that kind. Not what else the folder holds: another report's
    subfolder may appear after this one is written (results/tcga-tabular/paper-snn/), and a rerun must give the same
    bytes."""
    names = sorted({p.relative_to(out).as_posix() for p in written} | {README})
    kinds: dict[str, list[str]] = {pattern: [] for pattern in FILES}
    for name in names:
        pattern = next((p for p in FILES if fnmatch(name, p)), None)
        if pattern is None:
            raise BenchError(f"bench/report/readme.py has no description of {name}: add it to FILES.")
        kinds[pattern].append(name)
    return [f"- {', '.join(f'`{n}`' for n in found)}: {FILES[pattern]}." for pattern, found in kinds.items() if found]


def write_readme(out: Path, written: list[Path], res: Results, table: CIndexTable, experiment: str,
                 command: str) -> Path:
    """README.md in `out`, naming every file of `written` (paths under `out`); `command` made the report."""
    facts = experiment_facts(res.runs)
    notes = (out / NOTES).is_file()
    cohorts = ", ".join(c.upper() for c in table.cohorts)
    models = ", ".join(display(m) for m in sorted(res.runs["model"].unique()))
    lines = [MARKER, f"# {experiment}: {models} on {cohorts}", "",
             "The C-index table, calibration and figures of the finished fold runs of MLflow experiment "
             f"`{experiment}` ({facts['data']} data, {facts['protocol']} protocol). Written by `python -m bench.report` "
             "from the runs, like every file here."
             + (f" Findings and notes on these results, written by hand: [{NOTES}]({NOTES})." if notes else
                f" Hand-written findings belong in a {NOTES} beside it, which the report links to and leaves alone."),
             "", "## What it shows and what it does not", "", *_shows(res, facts), "",
             "## The table", "", *markdown_lines(table_rows(table, "md")), "",
             "![Kaplan-Meier curves of the high- and low-risk halves, per cohort and model](km_grid.png)", "",
             "## How to read it", "", *_reading(res, table, facts), "",
             "## How it was made", "", *_made(res.runs, experiment, command, facts), "",
             "## Files", "", *_files(out, written)]
    path = out / README
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
