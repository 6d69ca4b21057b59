"""Percentiles and the distribution summary every latency in the results uses."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def distribution(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 4), "p95": round(percentile(values, 95), 4),
            "p99": round(percentile(values, 99), 4), "max": round(max(values), 4),
            "mean": round(statistics.fmean(values), 4)}
