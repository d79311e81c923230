"""The figures: KM per (cohort, model) and as a grid, per-fold C, mean ranks, calibration at the horizon per
cohort; fixed sizes and jitter so a rerun writes the same bytes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench import stats  # noqa: E402
from bench.report.analysis import ORACLE, SIGNIFICANCE, Results, cohort_order, display, fmt_p  # noqa: E402

DPI = 150
KM_SIZE = (6.0, 5.0)          # inches; 900 x 750 px at DPI
FOLD_PLOT_SIZE = (7.5, 4.0)
RANKS_SIZE = (6.5, 3.2)
KM_CELL = (3.2, 2.7)          # per panel of the grid
CAL_CELL = (2.6, 2.6)         # per model panel of a cohort's calibration figure
CAL_COLUMNS = 5               # panels per row before the calibration figure wraps
HIGH_COLOR, LOW_COLOR = "#b2182b", "#2166ac"


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _km_lines(ax, group: pd.DataFrame, with_counts_in_legend: bool) -> float:
    """Draw both KM curves with bands on `ax`; return the log-rank p."""
    _, p = stats.logrank(group["time"], group["event"], group["high"])
    for is_high, color, name in ((True, HIGH_COLOR, "High risk"), (False, LOW_COLOR, "Low risk")):
        part = group[group["high"] == is_high]
        if part.empty:
            continue
        km = stats.km_curve(part["time"], part["event"])
        t = np.r_[0.0, km.time]
        label = f"{name} (n={len(part)}, {int(part['event'].sum())} deaths)" if with_counts_in_legend else name
        ax.step(t, np.r_[1.0, km.survival], where="post", color=color, lw=1.6, label=label)
        ax.fill_between(t, np.r_[1.0, km.low], np.r_[1.0, km.high], step="post", color=color, alpha=0.18, lw=0)
        censored = part[part["event"] == 0]["time"].to_numpy(dtype=float)
        idx = np.searchsorted(km.time, censored, side="right") - 1
        ax.plot(censored, km.survival[np.clip(idx, 0, None)], "|", color=color, ms=5, mew=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    return p


def plot_km(group: pd.DataFrame, title: str, subtitle: str, path: Path) -> Path:
    """KM of the pooled high/low groups, 95% bands, censor ticks, log-rank p, at-risk counts below."""
    fig = plt.figure(figsize=KM_SIZE)
    grid = fig.add_gridspec(2, 1, height_ratios=(4.2, 1.0), hspace=0.32, left=0.2, right=0.96, top=0.88, bottom=0.05)
    ax = fig.add_subplot(grid[0])
    p = _km_lines(ax, group, with_counts_in_legend=True)
    fig.suptitle(title, fontsize=12, y=0.975)
    ax.set_title(subtitle, fontsize=8, color="#444444")
    ax.set_xlabel("Time (months)")
    ax.set_ylabel("Survival probability")
    ax.legend(title=f"log-rank p {fmt_p(p)}", loc="upper right", fontsize=8, title_fontsize=8, frameon=False)
    ax.grid(alpha=0.3, lw=0.5)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    table = fig.add_subplot(grid[1], sharex=ax)
    for y, (is_high, color) in enumerate(((False, LOW_COLOR), (True, HIGH_COLOR))):
        counts = stats.at_risk(group.loc[group["high"] == is_high, "time"], ticks)
        for t, n in zip(ticks, counts):
            table.text(t, y, str(n), ha="center", va="center", fontsize=8, color=color)
    table.set_yticks([0, 1], ["Low risk", "High risk"], fontsize=8)
    for label, color in zip(table.get_yticklabels(), (LOW_COLOR, HIGH_COLOR)):
        label.set_color(color)
    table.set_ylim(-0.6, 1.6)
    table.set_title("Number at risk", fontsize=8, loc="left")
    table.tick_params(axis="x", labelbottom=False, length=0)
    table.tick_params(axis="y", length=0, pad=16)
    for side in ("top", "right", "bottom", "left"):
        table.spines[side].set_visible(False)
    return _save(fig, path)


def plot_km_grid(res: Results, path: Path) -> Path:
    """All KM panels: cohorts as rows, models as columns (at-risk counts live in the single figures)."""
    cohorts, models = cohort_order(res.groups["cohort"]), sorted(res.groups["model"].unique())
    fig, axes = plt.subplots(len(cohorts), len(models), squeeze=False, sharey=True,
                             figsize=(KM_CELL[0] * len(models), KM_CELL[1] * len(cohorts)))
    for i, cohort in enumerate(cohorts):
        for j, model in enumerate(models):
            ax = axes[i, j]
            g = res.groups[(res.groups["cohort"] == cohort) & (res.groups["model"] == model)]
            if g.empty:
                ax.axis("off")
                continue
            p = _km_lines(ax, g, with_counts_in_legend=False)
            ax.text(0.97, 0.95, f"log-rank p {fmt_p(p)}", transform=ax.transAxes, ha="right", va="top", fontsize=8)
            ax.set_title(f"{cohort.upper()} — {display(model)}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(cohorts) - 1:
                ax.set_xlabel("Time (months)", fontsize=8)
            if j == 0:
                ax.set_ylabel("Survival probability", fontsize=8)
    handles = [plt.Line2D([], [], color=HIGH_COLOR, lw=1.6), plt.Line2D([], [], color=LOW_COLOR, lw=1.6)]
    fig.legend(handles, ["High risk (test risk > fold model's training median)", "Low risk"], loc="lower center",
               ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def plot_fold_cindex(res: Results, path: Path) -> Path:
    """Per-fold C by cohort and model (dots), model mean per cohort (bar), oracle where known."""
    data = res.scores.assign(Model=res.scores["model"].map(display), Cohort=res.scores["cohort"].str.upper())
    data = data[["Cohort", "Model", "c_index"]]
    order = [c.upper() for c in cohort_order(res.scores["cohort"])]
    hue_order = [display(m) for m in sorted(res.scores["model"].unique())]
    runs = res.runs
    if runs["oracle_c_index"].notna().any():
        oracle = runs.groupby(["cohort", "seed", "fold"])["oracle_c_index"].first().reset_index()
        data = pd.concat([data, pd.DataFrame({"Cohort": oracle["cohort"].str.upper(), "Model": ORACLE,
                                              "c_index": oracle["oracle_c_index"]})], ignore_index=True)
        hue_order.append(ORACLE)
    palette = dict(zip(hue_order, sns.color_palette("colorblind", len(hue_order))))
    if ORACLE in palette:
        palette[ORACLE] = (0.35, 0.35, 0.35)
    fig, ax = plt.subplots(figsize=FOLD_PLOT_SIZE)
    state = np.random.get_state()  # seaborn jitters with the global numpy RNG: fix it so reruns match, then restore
    np.random.seed(0)
    try:
        sns.stripplot(data=data, x="Cohort", y="c_index", hue="Model", order=order, hue_order=hue_order,
                      palette=palette, dodge=True, jitter=0.08, size=4, ax=ax)
    finally:
        np.random.set_state(state)
    width = 0.8 / len(hue_order)  # seaborn's dodge layout: hue j of cohort i sits at i - 0.4 + (j + 0.5) * width
    means = data.groupby(["Cohort", "Model"])["c_index"].mean()
    for i, cohort in enumerate(order):
        for j, model in enumerate(hue_order):
            if (cohort, model) in means.index:
                x = i - 0.4 + (j + 0.5) * width
                ax.hlines(means[(cohort, model)], x - 0.4 * width, x + 0.4 * width, color=palette[model], lw=2)
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.text(ax.get_xlim()[1], 0.5, " random", va="center", ha="left", fontsize=8)
    low = float(np.nanmin(data["c_index"])) if data["c_index"].notna().any() else 0.4
    ax.set_ylim(min(0.4, low - 0.03), 1.0)
    ax.set_ylabel("Harrell's C-index (test fold)")
    ax.set_xlabel("")
    ax.set_title("Per-fold C-index (dots: folds × seeds; lines: mean)", fontsize=10)
    ax.legend(title=None, fontsize=8, loc="upper left", bbox_to_anchor=(1.06, 1.0), frameon=False)
    fig.subplots_adjust(left=0.1, right=0.75, bottom=0.1, top=0.9)
    return _save(fig, path)


def plot_ranks(res: Results, path: Path) -> Path:
    """Critical-difference style diagram of mean ranks across cohorts, with the low-power caveat."""
    means = res.summary.pivot(index="cohort", columns="model", values="c_mean")
    ranks = stats.mean_ranks(means).sort_values(kind="stable")
    n = int(means.dropna(axis=0, how="any").shape[0])
    k = len(ranks)
    fri_stat, fri_p, reason = stats.friedman(means)
    fig = plt.figure(figsize=RANKS_SIZE)
    ax = fig.add_axes((0.02, 0.24, 0.96, 0.72))
    half = (k + 1) // 2
    ax.set_xlim(k + 2.0, -1.0)  # rank 1 (best) on the right, as in Demsar's diagrams; margins hold the labels
    ax.set_ylim(-0.45 * half - 0.25, 1.7)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black", lw=1)
        ax.text(r, 0.3, str(r), ha="center", va="bottom", fontsize=8)
    ax.text((k + 1) / 2, 0.95, "mean rank (1 = best)", ha="center", fontsize=8)
    for i, (model, r) in enumerate(ranks.items()):
        right = i < half  # best models on the right side
        y = -0.45 * (i + 1) if right else -0.45 * (k - i)
        x_text = 0.8 if right else k + 0.2
        ax.plot([r, r, x_text], [0, y, y], color="black", lw=0.8)
        ax.text(x_text + (-0.05 if right else 0.05), y, f"{display(model)} ({r:.2f})", va="center",
                ha="left" if right else "right", fontsize=8)
    cd_text = ""
    if n >= 2 and k >= 2:
        cd = stats.nemenyi_cd(k, n)
        start = 1.0
        ax.plot([start, start + cd], [1.35, 1.35], color="#b2182b", lw=2)
        ax.text(start, 1.45, f"CD = {cd:.2f}", ha="right", va="bottom", fontsize=8, color="#b2182b")
        values = ranks.to_numpy()
        last, n_bars = -1, 0
        for i in range(k):
            j = max(jj for jj in range(i, k) if values[jj] - values[i] < cd)
            if j > i and j > last:
                y = -0.12 - 0.09 * n_bars
                n_bars += 1
                ax.plot([values[i] - 0.03, values[j] + 0.03], [y, y], color="#555555", lw=3, solid_capstyle="butt")
                last = j
        cd_text = f" Red bar: Nemenyi critical difference (α = {SIGNIFICANCE}); grey bars join models within it."
    fri = f"Friedman χ² = {fri_stat:.2f}, p {fmt_p(fri_p)}" if not reason else f"Friedman test not run ({reason})"
    caption = (f"Mean rank of the mean fold C-index over {n} cohort{'s' if n != 1 else ''}. {fri}.{cd_text} "
               f"With only {n} cohorts these tests have little power: models joined by a bar are not shown "
               "to be equal, only not shown to differ.")
    fig.text(0.03, 0.03, textwrap.fill(caption, 112), ha="left", va="bottom", fontsize=7)
    return _save(fig, path)


def plot_calibration(groups: pd.DataFrame, cohort: str, path: Path) -> Path:
    """One panel per model: each risk group's mean predicted S(t*) against its Kaplan-Meier S(t*) with the 95%
    interval, beside the diagonal (perfect calibration)."""
    models = sorted(groups["model"].unique())
    cols = min(len(models), CAL_COLUMNS)
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(CAL_CELL[0] * cols, CAL_CELL[1] * rows + 0.6),
                             layout="constrained")
    for ax in axes.flat[len(models):]:
        ax.axis("off")
    for ax, model in zip(axes.flat, models):
        g = groups[groups["model"] == model]
        ax.plot([0, 1], [0, 1], color="#888888", lw=0.8, ls="--")
        err = np.vstack([g["observed"] - g["observed_low"], g["observed_high"] - g["observed"]]).clip(min=0)
        ax.errorbar(g["predicted"], g["observed"], yerr=np.nan_to_num(err), fmt="o", color=LOW_COLOR, ms=4,
                    capsize=2, lw=1)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), aspect="equal")
        ax.set_title(f"{display(model)} (n={int(g['n'].sum())})", fontsize=9)
        ax.set_xlabel("Predicted S(t*)", fontsize=8)
        ax.set_ylabel("Observed S(t*) (KM)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
    horizon = float(groups["horizon"].iloc[0])
    title = (f"{cohort.upper()}: predicted vs observed survival at t* = {horizon:.1f} months "
             f"({groups['group'].max()} risk groups, test folds pooled)")
    fig.suptitle(textwrap.fill(title, int(14 * CAL_CELL[0] * cols)), fontsize=9)
    return _save(fig, path)


def write_figures(res: Results, out: Path) -> list[Path]:
    km_dir = out / "km"
    km_dir.mkdir(parents=True, exist_ok=True)
    for stale in km_dir.glob("*.png"):
        stale.unlink()
    written = []
    for (cohort, model), g in res.groups.groupby(["cohort", "model"], sort=True):
        subtitle = (f"{g['fold'].nunique()} test folds pooled; high risk = test risk above "
                    "its fold model's median training risk")
        written.append(plot_km(g, f"{cohort.upper()} — {display(model)}", subtitle, km_dir / f"{cohort}_{model}.png"))
    written.append(plot_km_grid(res, out / "km_grid.png"))
    cal_dir = out / "calibration"
    cal_dir.mkdir(exist_ok=True)
    for stale in cal_dir.glob("*.png"):
        stale.unlink()
    for cohort, g in res.horizons.groupby("cohort", sort=True):
        written.append(plot_calibration(g, cohort, cal_dir / f"{cohort}.png"))
    written.append(plot_fold_cindex(res, out / "fold_cindex.png"))
    written.append(plot_ranks(res, out / "ranks.png"))
    return written
