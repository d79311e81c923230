"""The C-index caption's measured error rates are the committed known-truth study's (results/validity/null)."""

from pathlib import Path

import pandas as pd

from bench.report.analysis import MEASURED_AT_5_FOLDS, _measured_text

NULL = Path(__file__).resolve().parents[1] / "results" / "validity" / "null"


def test_the_caption_quotes_the_committed_null_rates_and_power():
    fpr = pd.read_csv(NULL / "false_positive_rate.csv")
    row = fpr[(fpr["null"] == "null scenario: model vs model") & (fpr["test"] == "corrected_t") & (fpr["adjust"] == "raw")]
    assert (int(row["rejections"].iloc[0]), int(row["tests"].iloc[0])) == MEASURED_AT_5_FOLDS["null_rejections"]
    power = pd.read_csv(NULL / "power.csv").set_index("events_per_fold")["power"]
    assert {e: round(float(p), 3) for e, p in power.items()} == MEASURED_AT_5_FOLDS["power"]
    text = _measured_text([0, 1, 2, 3, 4])
    assert "rejected 2 of 60 true nulls at p < 0.05 (3.3%)" in text and "48% of trials at 32" in text
    assert _measured_text([0, 1]) == ""  # measured at 5 folds only
