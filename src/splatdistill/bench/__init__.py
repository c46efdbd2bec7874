"""Benchmarks run by ``splatdistill bench NAME``."""
