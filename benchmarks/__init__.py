"""Benchmarks of the source checkout (not installed with the package): ``train_throughput``
(``cossl-train bench``) and ``analysis_speed``; run them from the repository root with
``python -m benchmarks.<name>``. docs/benchmarks.md has what they measure and their numbers."""
