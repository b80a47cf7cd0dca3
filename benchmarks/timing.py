"""Shared by the benchmark scripts (run as ``python benchmarks/<name>.py``, so this folder is on the path)."""

from __future__ import annotations

import json
import os
import time


def best_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def record(benchmark: str, case: str, library: float, reference: float, unit: str, against: str, **extra) -> None:
    """Keep one measured ratio for ``make benchmarks``' table (``benchmarks/table.py``).

    ``library`` and ``reference`` are throughputs in ``unit`` (higher is faster), measured in
    this process; ``against`` names the reference implementation. A line goes to the JSON-lines
    file named by ``COLLAPSE_BENCHMARK_LOG``; without it, nothing is kept.
    """
    target = os.environ.get("COLLAPSE_BENCHMARK_LOG")
    if not target:
        return
    import jax

    row = {"benchmark": benchmark, "case": case, "library": library, "reference": reference, "unit": unit,
           "against": against, "ratio": library / reference, "device": jax.devices()[0].device_kind,
           "backend": jax.default_backend(), **extra}
    with open(target, "a") as log:
        log.write(json.dumps(row) + "\n")
