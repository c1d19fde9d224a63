"""Checks of the project as a whole (layout, docs, TRL contract, benchmarks, recipes), not of one module."""
