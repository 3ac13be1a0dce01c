"""``make bench`` (``python -m lrlab.tools.bench``): lrlab against the seed's own loops, and its costs, as ratios.

- ``seed.py``: the seed's §3.2 and §3.3 training loops, copied as the reference implementations.
- ``speed.py``: samples/s of the seed's loop, lrlab ``engine=autograd`` and ``engine=compiled`` on the same data.
- ``processes.py``: what a sweep costs (against a process that only imports and creates a store), what one
  more job costs, the vectorized launcher, and peak memory, each measured in fresh subprocesses.
- ``memory.py``: the child process of the memory case (one run, then its peak resident memory).
- ``server.py``: not part of ``make bench``: ``python -m lrlab.tools.benchmarks.server_load``, the runs per second one
  ``make server`` absorbs from 1, 4 and 16 clients (docs/scaling.md).
"""
