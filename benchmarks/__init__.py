"""Benchmarks for tap-bolna against the project's fake Bolna API (`python -m benchmarks.run`)."""
