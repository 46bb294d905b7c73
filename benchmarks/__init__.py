"""Benchmarks: each runs as `python benchmarks/<name>.py`, writes results/<name>.json."""
