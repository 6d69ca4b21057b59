"""Benchmarks of a recording node (issue 8): see benchmarks/README.md."""
