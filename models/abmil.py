"""Placeholder until the model lands (being written now)."""
