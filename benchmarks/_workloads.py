"""Workloads shared by the benchmarks: importable by worker processes of every peer.

``burn(n)`` is a deterministic CPU loop; ``calibrate(seconds)`` finds the ``n`` that
takes about that long here, so every machine runs tasks of the intended length.
"""

from __future__ import annotations

import time


def burn(n: int) -> int:
    """Pure-Python CPU work (no I/O, no GIL release), deterministic in ``n``."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def noop(x: int) -> int:
    return x


def calibrate(seconds: float) -> int:
    """Loop count for ``burn`` to take about ``seconds`` (median of a few tries)."""
    n = 100_000
    while True:
        start = time.perf_counter()
        burn(n)
        took = time.perf_counter() - start
        if took > 0.05:
            break
        n *= 2
    per_iter = took / n
    return max(1, int(seconds / per_iter))
