"""ghanet-bench: a reproducible benchmark for WSI survival prediction (G-HANet and baselines)."""

__version__ = "0.1.0"
