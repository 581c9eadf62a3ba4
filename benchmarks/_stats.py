"""What the benchmarks report of many timings: quantiles, computed one way for all of them."""

from __future__ import annotations

from typing import Sequence


def quantile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile, interpolating between the two nearest ranks."""
    ordered = sorted(samples)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
