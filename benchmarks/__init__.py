"""Benchmarks of the tracking server (see benchmarks/README.md)."""
