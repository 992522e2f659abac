"""Benchmarks: KelpFS against the local disk and SeaweedFS (python -m bench.run; docs/bench.md)."""
