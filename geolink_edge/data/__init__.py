"""Datasets: the real benchmarks' layouts and the synthetic cross-view world."""
