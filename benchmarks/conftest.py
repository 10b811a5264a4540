"""Benchmarks: speed targets (pytest-benchmark) and the accuracy goals on held-out GPU runs."""
