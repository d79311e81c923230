"""Tables and figures from the finished fold runs in the MLflow store: `python -m bench.report` (see `cli`).

The modules depend one way: `store` (the only one that reads MLflow) -> `analysis` (per-fold scores, pooled C,
pairwise tests, the table's marks and captions) -> `tables` (csv, md, tex) and `figures` (png) -> `readme` (the
folder's README.md, naming every file written) -> `cli` (writes --out and logs the report run). Every function after `store` takes DataFrames.
"""

from bench.report.cli import main

__all__ = ["main"]
