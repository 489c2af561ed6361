"""Benchmarks: scripts that measure and write their figures to results/bench/."""
