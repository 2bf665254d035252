"""The benchmark: `python bench/benchmark.py` runs it; one module per group of sections."""
