"""Benchmarks: KelpFS against the local disk, a fusepy pass-through and SeaweedFS (python -m
bench.run; docs/bench.md)."""
