"""Speed, memory and quality benchmarks, run from the repository root as `python -m benchmarks.<name>`."""
