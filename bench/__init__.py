"""Benchmarks. Targets are ratios against a baseline measured in the same run, never absolute
times: machines are shared and noisy. Run all with ``make bench`` (``python -m bench``)."""
