"""Latency and throughput summaries used by every benchmark stage."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Summarise per-call latencies.

    Args:
        seconds: one wall-clock duration per call, in seconds.

    Returns:
        ``{"n", "p50_ms", "p95_ms", "p99_ms", "mean_ms"}``; percentiles by NumPy's default linear
        interpolation, in milliseconds.

    Raises:
        ValueError: ``seconds`` is empty.
    """
    if not seconds:
        raise ValueError("no latencies to summarise")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def time_calls(call: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Run ``call`` ``warmup`` times unmeasured, then ``repeats`` times measured.

    Returns:
        The measured durations in seconds (``time.perf_counter``), one per call.
    """
    for _ in range(warmup):
        call()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return durations


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` rounded to 3 decimals (``nan`` when the denominator is 0)."""
    return round(numerator / denominator, 3) if denominator else float("nan")
