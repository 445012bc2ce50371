"""Fixed log-spaced histograms for latency and time to first token, mergeable by addition.

Bin 0 holds every value up to MIN_MS; bin i ≥ 1 holds (γ^(i-1), γ^i] ms with γ = (1+α)/(1-α),
and stands for 2·γ^i/(γ+1). Every value of a bin is within α of that representative, so a
percentile read from the counts is within **α = 5 % relative error** of the exact percentile
(same rank definition, nearest rank: the ⌈q·n⌉-th smallest value), however many histograms were
added together. Two exceptions, stated rather than hidden: values ≤ 1 ms are reported as 0.5 ms
(absolute error ≤ 0.5 ms), and values above MAX_MS (≈ 33 min) share the top bin.

The layout is fixed: it is the column list of the rollup tables (l0…, t0…). Changing ALPHA or
BINS needs new tables, not an edit.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate

ALPHA = 0.05
GAMMA = (1 + ALPHA) / (1 - ALPHA)
BINS = 146
MIN_MS = 1.0
MAX_MS = GAMMA ** (BINS - 1)
QUANTILES = (0.5, 0.95, 0.99)

# Bin i holds values ≤ UPPER_BOUNDS[i] (and above the previous bound); the top bin has no bound.
UPPER_BOUNDS = tuple(MIN_MS * GAMMA ** i for i in range(BINS - 1))
_REPRESENTATIVE = (MIN_MS / 2, *(2 * GAMMA ** i / (GAMMA + 1) for i in range(1, BINS)))


def bin_of(ms: float) -> int:
    return bisect_left(UPPER_BOUNDS, ms)


def representative(index: int) -> float:
    return _REPRESENTATIVE[index]


def rank(q: float, n: int) -> int:
    """Nearest rank, 1-based: the ⌈q·n⌉-th smallest of n values (at least the first)."""
    return max(1, math.ceil(q * n - 1e-9))


def quantiles(counts: Sequence[int], qs: Sequence[float] = QUANTILES) -> list[float | None]:
    """The value at each quantile, from bin counts; None for an empty histogram."""
    cumulative = list(accumulate(counts))
    n = cumulative[-1] if cumulative else 0
    if n <= 0:
        return [None] * len(qs)
    return [round(_REPRESENTATIVE[bisect_left(cumulative, rank(q, n))], 3) for q in qs]


def exact_quantiles(values: list[float], qs: Sequence[float] = QUANTILES) -> list[float | None]:
    """The same ranks, from the values themselves (the raw-rows path)."""
    if not values:
        return [None] * len(qs)
    values.sort()
    return [values[rank(q, len(values)) - 1] for q in qs]
