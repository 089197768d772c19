"""Benchmarks: scripts that print a table and write it into docs/. Run from the repository root as
`python -m benchmarks.<name>` (the Makefile's bench-* targets do)."""
