"""Benchmarks of the inference package; each is one command (`python -m inference.bench.<name>`)."""
