"""Measurement helpers: pair every timed run with a serial run taken just before it
(the machine's speed drifts), repeat, report medians and minima."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Series:
    """Repeated measurements of one system on one workload."""

    name: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def best(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (noise indicator)."""
        if len(self.values) < 4:
            return float("nan")
        q = statistics.quantiles(self.values, n=4)
        return (q[2] - q[0]) / self.median if self.median else float("nan")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_speedups(
    serial: Callable[[], object],
    systems: dict[str, Callable[[], object]],
    pairs: int,
) -> dict[str, Series]:
    """For each pair round and system: a serial run, then the system's run; the
    speedup is their ratio. Systems take turns inside each round."""
    results = {name: Series(name) for name in systems}
    for _ in range(pairs):
        for name, run in systems.items():
            base = timed(serial)
            took = timed(run)
            results[name].values.append(base / took)
    return results


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.node()}: {platform.processor() or platform.machine()}, {cores} usable cores, "
        f"Python {sys.version.split()[0]}, {platform.system()} {platform.release()}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
