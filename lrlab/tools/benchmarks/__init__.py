"""The cases of ``make bench`` (``lrlab/tools/bench.py``), and ``server_load`` (not part of it): see
docs/benchmarks.md."""
