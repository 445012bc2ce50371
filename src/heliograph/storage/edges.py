"""The rows at the ragged edges of rollup ranges, summed by whole minute and kept between evaluations.

A range answered by rollups kept by the hour (per user, request name or property: rollup_schema.py)
reads up to an hour of rows at each end, and the alert evaluator asks the same ranges, a minute
further on, every interval. `EdgeMemo` keeps what those rows summed to, per query and whole minute,
so that each evaluation reads only the minutes it has not seen: the one that just ended, and the
partial minutes at the very ends of each range (which are read every time). `EdgeReads`, mixed into
the analytics queries, reads through it.

A kept minute is used only while the number of requests the rollups count in it (rollup_minute,
written with the rows in one transaction) is the one it was read with: a request recorded late
(a long stream, a journal replay) or erased makes that minute be read again, so answers stay what
reading every row would give. One change is not counted: a property set on a stored request
(`PUT …/property`) moves it between values without changing any count, so a rule grouped or
filtered by that property sees the move at the window's edge minutes once they leave the memo (an
edge minute is at most an hour old; the rollups in between see it at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from .cells import Cell
from .executor import QueryMixin
from .filters import Dialect, Node

MINUTE_MS = 60_000
Cells = dict[tuple[Any, Any], Cell]


class EdgeMemo:
    """Per query (project, filter, grouping, …) and minute: the request count the minute was read at
    and its cells. One evaluation after another: call `next_evaluation()` between them."""

    def __init__(self) -> None:
        self._minutes: dict[tuple[Any, ...], dict[int, tuple[int, Cells]]] = {}
        self._used: set[tuple[tuple[Any, ...], int]] = set()
        self._counts: dict[tuple[str, int, int], dict[int, int]] = {}    # this evaluation's
        self.ranges: dict[tuple[Any, ...], Cells] = {}                   # this evaluation's totals
        self.minutes_read = 0

    def next_evaluation(self) -> None:
        """Forget the minutes no range used in the evaluation that ended (they have left every edge),
        and the counts and totals read for it."""
        for key in list(self._minutes):
            minutes = self._minutes[key]
            for minute in [m for m in minutes if (key, m) not in self._used]:
                del minutes[minute]
            if not minutes:
                del self._minutes[key]
        self._used.clear()
        self._counts.clear()
        self.ranges.clear()

    def counts(self, project: str, start: int, end: int, read: Callable[[], dict[int, int]]) -> dict[int, int]:
        """Requests per minute of [start, end) as the rollups count them, read once per evaluation."""
        key = (project, start, end)
        if key not in self._counts:
            self._counts[key] = read()
        return self._counts[key]

    def missing(self, key: tuple[Any, ...], start: int, end: int, counts: dict[int, int]) -> Iterator[tuple[int, int]]:
        """Runs [lo, hi) of whole minutes of [start, end) not kept, or kept at another count."""
        kept = self._minutes.get(key, {})
        run: int | None = None
        for minute in range(start, end, MINUTE_MS):
            found = kept.get(minute)
            stale = found is None or found[0] != counts.get(minute, 0)
            if stale and run is None:
                run = minute
            elif not stale and run is not None:
                yield run, minute
                run = None
        if run is not None:
            yield run, end

    def keep(self, key: tuple[Any, ...], start: int, end: int, counts: dict[int, int], read: Cells) -> None:
        """The cells of [start, end), read by minute (keys (minute, group)), kept minute by minute."""
        kept = self._minutes.setdefault(key, {})
        by_minute: dict[int, Cells] = {minute: {} for minute in range(start, end, MINUTE_MS)}
        for (minute, group), cell in read.items():
            by_minute[minute][(0, group)] = cell
        for minute, cells in by_minute.items():
            kept[minute] = (counts.get(minute, 0), cells)
        self.minutes_read += len(by_minute)

    def cells(self, key: tuple[Any, ...], start: int, end: int) -> Iterator[Cells]:
        kept = self._minutes[key]
        for minute in range(start, end, MINUTE_MS):
            self._used.add((key, minute))
            yield kept[minute][1]


class EdgeReads(QueryMixin):
    """Mixed into AnalyticsQueries: the evaluator's reads of ranges' edges through an EdgeMemo."""

    dialect: ClassVar[Dialect]

    def _raw_cells(self, cells: Cells, project: str, node: Node, start: int, end: int, bucket_ms: int | None,
                   group_by: str | None, only: frozenset[Any] | None, *, exact: bool, sums_only: bool = False,
                   by_time: bool = False) -> None:
        raise NotImplementedError

    def _edge_cells(self, cells: Cells, memo: EdgeMemo, project: str, node: Node, start: int, end: int,
                    group_by: str | None, only: frozenset[Any] | None, sums_only: bool) -> None:
        """Totals of the rows in [start, end), once per evaluation: whole minutes from the memo when
        their count is unchanged (read and kept otherwise), the partial minutes at both ends read.
        Rows are read once for every rule of the same query, with histograms (but per user, whose
        percentiles are never reported); a rule without percentiles merges the sums alone."""
        histograms = group_by != "user"
        key = (project, node, group_by, only)
        total = memo.ranges.get((*key, start, end, sums_only))
        if total is None:
            total = memo.ranges[(*key, start, end, sums_only)] = {}
            first, last = -(-start // MINUTE_MS) * MINUTE_MS, end // MINUTE_MS * MINUTE_MS
            if first >= last:
                first = last = end
            parts: list[Cells] = []
            for lo, hi in ((start, first), (last, end)):
                if lo < hi:
                    part = memo.ranges.get((*key, lo, hi, None))
                    if part is None:
                        part = memo.ranges[(*key, lo, hi, None)] = {}
                        self._raw_cells(part, project, node, lo, hi, None, group_by, only, exact=False,
                                        sums_only=not histograms, by_time=True)
                    parts.append(part)
            if first < last:
                counts = memo.counts(project, first, last, lambda: self._minute_counts(project, first, last))
                for lo, hi in list(memo.missing(key, first, last, counts)):
                    read: Cells = {}
                    self._raw_cells(read, project, node, lo, hi, MINUTE_MS, group_by, only, exact=False,
                                    sums_only=not histograms, by_time=True)
                    memo.keep(key, lo, hi, counts, read)
                parts.extend(memo.cells(key, first, last))
            for part in parts:
                _merge(total, part, not sums_only)
        _merge(cells, total, not sums_only)

    def _minute_counts(self, project: str, start: int, end: int) -> dict[int, int]:
        """Requests per minute of [start, end) (whole minutes) as rollup_minute counts them."""
        sql = self.dialect.sql("SELECT r.bucket, SUM(r.requests) FROM rollup_minute r WHERE r.project_id = ? "
                               "AND r.bucket >= ? AND r.bucket < ? GROUP BY r.bucket")
        return {int(bucket): int(count) for bucket, count in self._tuples(sql, [project, start, end])}


def _merge(cells: Cells, part: Cells, histograms: bool) -> None:
    for at, known in part.items():
        cell = cells.get(at)
        if cell is None:
            cell = cells[at] = Cell(exact=False)
        cell.merge(known, histograms=histograms)
