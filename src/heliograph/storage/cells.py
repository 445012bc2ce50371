"""What analytics know about the requests of one (bucket, group), from rollups or from rows.

Sums are integers (nano-USD, µs) so that rollups and rows agree exactly. Latency and TTFT are kept
as histogram counts (rollups, and raw rows at a range's ragged ends), as the values themselves
(exact mode: a query the rollups cannot answer), or as percentiles SQL already found (final
cells: whole buckets read from rollup rows of their own size; see analytics._rollup_cells).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from .histogram import BINS, bin_of, exact_quantiles, quantiles, representative
from .rollup_schema import SUMS

_N = len(SUMS)


class Cell:
    """What is known about the requests of one (bucket, group): integer sums, and latency/TTFT as
    histogram counts (None until some arrive) or, in exact mode, as the values themselves."""

    __slots__ = ("exact", "fixed", "latency", "sums", "ttft")

    def __init__(self, exact: bool) -> None:
        self.sums = [0] * _N
        self.exact = exact
        self.latency: list[Any] | None = [] if exact else None
        self.ttft: list[Any] | None = [] if exact else None
        self.fixed: list[float | None] | None = None     # percentiles computed by SQL (final cells)

    def add_rollup(self, values: Sequence[Any], histograms: bool) -> None:
        """Summed rollup columns: the sums, then cumulative latency and TTFT counts."""
        self.sums = [a + b for a, b in zip(self.sums, values[:_N])]
        if histograms:
            self.latency = _added(self.latency, _counts(values[_N:_N + BINS]))
            self.ttft = _added(self.ttft, _counts(values[_N + BINS:]))

    @classmethod
    def final(cls, sums: Sequence[int], bins: Sequence[int | None]) -> Cell:
        """A cell whose percentiles SQL already found (as bin numbers); it takes no more data."""
        cell = cls(exact=False)
        cell.sums = list(sums)
        cell.fixed = [None if b is None else round(representative(b), 3) for b in bins]
        return cell

    def add_row(self, row: Sequence[Any]) -> None:
        """One raw row: status, cost, six token counts, latency_ms, ttft_ms, cache hit."""
        status, cost, *tokens, latency, ttft, cached = row
        sums = self.sums
        sums[0] += 1
        sums[1] += 1 if status >= 400 or status < 100 else 0
        if cost is None:
            sums[3] += 1
        else:
            sums[2] += round(cost * 1_000_000_000)
        for i, count in enumerate(tokens):
            sums[4 + i] += count or 0
        sums[10] += round(latency * 1000)
        self.latency = _with_value(self.latency, latency, self.exact)
        if ttft is not None:
            sums[11] += round(ttft * 1000)
            sums[12] += 1
            self.ttft = _with_value(self.ttft, ttft, self.exact)
        if cached:
            sums[13] += 1

    def to_histogram(self) -> None:
        """Exact values → histogram counts (to bound memory on very large raw reads)."""
        if self.exact:
            values = (self.latency or [], self.ttft or [])
            self.exact, self.latency, self.ttft = False, None, None
            for value in values[0]:
                self.latency = _with_value(self.latency, value, False)
            for value in values[1]:
                self.ttft = _with_value(self.ttft, value, False)

    def merge(self, other: Cell, histograms: bool = True) -> None:
        """Add `other` in; `histograms` False: its sums alone (no percentile is wanted)."""
        assert self.fixed is None and other.fixed is None, "final cells are never merged"
        self.sums = [a + b for a, b in zip(self.sums, other.sums)]
        if not histograms:
            return
        if self.exact:
            assert self.latency is not None and self.ttft is not None
            self.latency += other.latency or []
            self.ttft += other.ttft or []
        else:
            self.latency = _added(self.latency, other.latency)
            self.ttft = _added(self.ttft, other.ttft)

    def metrics(self, percentiles: bool) -> dict[str, Any]:
        s = self.sums
        requests, ttft_count = s[0], s[12]
        latency: list[float | None] = [None] * 3
        ttft: list[float | None] = [None] * 3
        if percentiles and self.fixed is not None:
            latency, ttft = self.fixed[:3], self.fixed[3:]
        elif percentiles and self.exact:
            latency, ttft = exact_quantiles(list(self.latency or [])), exact_quantiles(list(self.ttft or []))
        elif percentiles:
            latency, ttft = quantiles(self.latency or []), quantiles(self.ttft or [])
        return {
            "requests": requests, "errors": s[1], "error_rate": s[1] / requests if requests else 0.0,
            "cost": s[2] / 1_000_000_000, "unpriced_requests": s[3],
            "prompt_tokens": s[4], "completion_tokens": s[5], "total_tokens": s[6],
            "prompt_cache_read_tokens": s[7], "prompt_cache_write_tokens": s[8], "reasoning_tokens": s[9],
            "latency_avg": round(s[10] / requests / 1000, 3) if requests else None,
            "latency_p50": latency[0], "latency_p95": latency[1], "latency_p99": latency[2],
            "ttft_avg": round(s[11] / ttft_count / 1000, 3) if ttft_count else None,
            "ttft_p50": ttft[0], "ttft_p95": ttft[1], "ttft_p99": ttft[2],
            "cache_hits": s[13],
        }


def _counts(cumulative: Sequence[int]) -> list[int]:
    return [cumulative[0], *(b - a for a, b in pairwise(cumulative))]


def _added(counts: list[Any] | None, more: Sequence[Any] | None) -> list[Any] | None:
    if more is None:
        return counts
    return list(more) if counts is None else [a + b for a, b in zip(counts, more)]


def _with_value(values: list[Any] | None, value: float, exact: bool) -> list[Any]:
    if exact:
        assert values is not None
        values.append(value)
        return values
    counts = [0] * BINS if values is None else values
    counts[bin_of(value)] += 1
    return counts
