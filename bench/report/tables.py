"""The C-index and calibration tables (csv, md, tex) and the summary CSVs, with fixed formatting so a rerun
is byte-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import calibration
from bench.report.analysis import KM_LABEL, CIndexTable, Results, calibration_caption, cohort_order, display


def _cell_text(cell, fmt: str) -> str:
    mu, sd, bold, worse = cell
    if not np.isfinite(mu):
        return "n/a"
    pm = {"latex": "$\\pm$", "md": "±", "csv": "±"}[fmt]
    text = f"{mu:.3f} {pm} {sd:.3f}"
    if worse:
        text += {"latex": "$^\\dagger$", "md": " †", "csv": " †"}[fmt]
    if bold and fmt == "md":
        text = f"**{text}**"
    if bold and fmt == "latex":
        text = f"\\textbf{{{text}}}"
    return text


def table_rows(table: CIndexTable, fmt: str) -> list[list[str]]:
    """Header plus one list of cell strings per row, for `fmt` in csv | md | latex."""
    header = ["Model"] + [c.upper() for c in table.cohorts] + ["Overall mean", "Mean rank"]
    out = [header]
    for row in table.rows:
        cells = [_cell_text(table.cells[(row, c)], fmt) + (f" ({table.partial[(row, c)]})" if (row, c) in table.partial
                                                          else "") for c in table.cohorts]
        overall = table.overall.get(row, np.nan)
        rank = table.rank.get(row, np.nan)
        out.append([row] + cells + [f"{overall:.3f}" if np.isfinite(overall) else "n/a",
                                    f"{rank:.2f}" if np.isfinite(rank) else "–"])
    return out


LATEX_TEXT = (("\\", "\\textbackslash{}"), ("_", "\\_"), ("&", "\\&"), ("%", "\\%"), ("#", "\\#"),
              (">=", "$\\geq$"), ("<", "$<$"), (">", "$>$"), ("±", "$\\pm$"), ("×", "$\\times$"),
              ("†", "$^\\dagger$"), ("—", "---"), ("–", "--"), ("α", "$\\alpha$"))


def _latex_escape(text: str) -> str:
    """Plain text (labels, caption) to LaTeX that compiles with the default font encoding."""
    for plain, latex in LATEX_TEXT:
        text = text.replace(plain, latex)
    return text


def markdown_lines(rows: list[list[str]], centred: bool = True) -> list[str]:
    """A table's rows (header first) as Markdown lines, the first column left-aligned and the others centred
    (`centred`) or left-aligned too."""
    rule = ":---:" if centred else "---"
    return (["| " + " | ".join(rows[0]) + " |", "|" + "|".join(["---"] + [rule] * (len(rows[0]) - 1)) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _write_csv_md(plain: list[list[str]], md: list[list[str]], caption: str, csv_path: Path, md_path: Path) -> None:
    """A table's rows (header first) as CSV, and as Markdown under its caption."""
    pd.DataFrame(plain[1:], columns=plain[0]).to_csv(csv_path, index=False, lineterminator="\n")
    md_path.write_text("\n".join([f"**Table.** {caption}", "", *markdown_lines(md)]) + "\n", encoding="utf-8")


def write_table(table: CIndexTable, out: Path) -> list[Path]:
    """cindex_table.csv, .md and .tex; fixed formatting so a rerun is byte-identical."""
    csv_path, md_path, tex_path = out / "cindex_table.csv", out / "cindex_table.md", out / "cindex_table.tex"
    _write_csv_md(table_rows(table, "csv"), table_rows(table, "md"), table.caption, csv_path, md_path)
    tex = table_rows(table, "latex")
    n_cohorts = len(table.cohorts)
    body = [" & ".join(c if 0 < i <= n_cohorts else _latex_escape(c) for i, c in enumerate(r)) + " \\\\"
            for r in tex[1:]]
    caption = _latex_escape(table.caption)
    tex_lines = ["\\begin{table}[t]", "\\centering", "\\small",
                 f"\\caption{{{caption}}}", "\\label{tab:cindex}",
                 "\\begin{tabular}{l" + "c" * (len(tex[0]) - 1) + "}", "\\hline",
                 " & ".join(tex[0]) + " \\\\", "\\hline", *body, "\\hline", "\\end{tabular}", "\\end{table}"]
    tex_path.write_text("\n".join(tex_lines) + "\n", encoding="utf-8")
    return [csv_path, md_path, tex_path]


def _mean_pm_std(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(mean) else "n/a"


def _mean(values) -> str:
    v = float(np.nanmean(values)) if np.isfinite(np.asarray(values, dtype=float)).any() else np.nan
    return f"{v:.3f}" if np.isfinite(v) else "n/a"


def _rejected(rejected, tested) -> str:
    return f"{int(rejected)}/{int(tested)}" if tested else "n/a"


CALIBRATION_FIELDS = ("IBS", "BSS", "td-AUC", "D-cal")


def calibration_rows(res: Results, fmt: str) -> list[list[str]]:
    """Header plus one row per model and the Kaplan-Meier reference row: per cohort IBS, Brier skill score and
    td-AUC (mean ± std) and D-calibration rejections (k/n fold runs), then their means (rejections: summed)
    over cohorts.

    `fmt` is csv or md; md bolds the lowest model IBS of each cohort (lower is better).
    """
    s = res.summary
    cohorts, models = cohort_order(s["cohort"]), sorted(s["model"].unique())
    cells = s.set_index(["cohort", "model"])
    best = s.groupby("cohort")["ibs"].min()
    out = [["Model"] + [f"{c.upper()} {f}" for c in cohorts for f in CALIBRATION_FIELDS]
           + ["Mean IBS", "Mean BSS", "Mean td-AUC", "D-cal"]]
    for model in models:
        row = [display(model)]
        for cohort in cohorts:
            if (cohort, model) not in cells.index:
                row += ["n/a"] * len(CALIBRATION_FIELDS)
                continue
            r = cells.loc[(cohort, model)]
            ibs = _mean_pm_std(r["ibs"], r["ibs_std"])
            if fmt == "md" and np.isfinite(r["ibs"]) and r["ibs"] == best[cohort]:
                ibs = f"**{ibs}**"
            row += [ibs, _mean_pm_std(r["brier_skill"], r["brier_skill_std"]),
                    _mean_pm_std(r["td_auc"], r["td_auc_std"]), _rejected(r["dcal_rejected"], r["dcal_tested"])]
        mine = s[s["model"] == model]
        row += [_mean(mine["ibs"]), _mean(mine["brier_skill"]), _mean(mine["td_auc"]),
                _rejected(mine["dcal_rejected"].sum(), mine["dcal_tested"].sum())]
        out.append(row)
    km = calibration.km_reference(res.calibration).set_index("cohort").reindex(cohorts)
    row = [KM_LABEL]
    for cohort in cohorts:
        row += [_mean_pm_std(km.loc[cohort, "ibs_km"], km.loc[cohort, "ibs_km_std"]), "0", "–", "–"]
    out.append(row + [_mean(km["ibs_km"]), "0", "–", "–"])
    return out


def write_calibration_table(res: Results, out: Path) -> list[Path]:
    """calibration_table.csv and .md, beside cindex_table.*; fixed formatting so a rerun is byte-identical."""
    csv_path, md_path = out / "calibration_table.csv", out / "calibration_table.md"
    _write_csv_md(calibration_rows(res, "csv"), calibration_rows(res, "md"), calibration_caption(res), csv_path, md_path)
    return [csv_path, md_path]


def write_csvs(res: Results, out: Path) -> list[Path]:
    """pairwise_tests.csv, cindex_summary.csv, calibration_folds.csv (per fold run) and calibration_groups.csv (the
    figure's risk groups at the horizon) with fixed float formatting."""
    paths = {name: out / f"{name}.csv" for name in ("pairwise_tests", "cindex_summary", "calibration_folds",
                                                    "calibration_groups")}
    for name, frame in zip(paths, (res.pairwise, res.summary, res.calibration, res.horizons)):
        frame.to_csv(paths[name], index=False, float_format="%.6g", lineterminator="\n")
    return list(paths.values())
