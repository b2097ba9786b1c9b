"""jobd benchmarks: `python -m bench [--quick]` runs every scenario and prints one table."""
