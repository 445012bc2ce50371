"""Analytics over the request log: from the rollups when they can answer, from the rows otherwise.

A query is a project, a filter tree, a time range [start, end), a bucket (minute/hour/day or none)
and an optional grouping; it only ever reads that project's rollup and request rows. It is
served from a rollup family when every condition of the filter is on a column that family keeps
and the grouping is one of its keys:

    rollup_model_{hour,day}          filter on model / provider; group by those or nothing
    rollup_{minute,hour,day}         the same with status (filter or group); also the minute edges
    rollup_dimension_*               request_name (filter or group), or property:<key> (group by it,
                                     filter on that key; ungrouped: only positive tests of one key)
    rollup_user_*                    group by user, filter on user_id

The range is then cut into the coarsest buckets that fit it and the output bucket (whole days,
then whole hours, then minutes), and the ragged ends are read from the rows themselves, so any
range is exact in counts and sums. Percentiles come from the histograms (≤ 5 % relative error,
histogram.py). Anything else — a filter on latency, cost, tokens, scores, another property, time
conditions inside the filter — is computed from the rows with the shared filter compiler, with
exact percentiles (up to EXACT_LIMIT matching rows; past it, the same histograms bound memory);
both paths return the same shape.

Per-user percentiles are not kept (users are unbounded, histograms are 292 columns), so grouping
by user reports latency and TTFT averages but `null` percentiles — on both paths, so an answer
never depends on which path ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, ClassVar

from .cells import Cell
from .edges import EdgeMemo, EdgeReads
from .filters import ALL, All, Branch, Column, Condition, Dialect, Node, compile_filter
from .histogram import BINS, QUANTILES
from .rollup_schema import (
    DIMENSION,
    LATENCY_BINS,
    LEVEL_MS,
    MAIN,
    MODEL,
    SUMS,
    TTFT_BINS,
    USER,
    Family,
)

# and "property:<key>"; prompt_version is read from the rows (no rollup keeps it): compare versions
# with a filter on prompt_id.
GROUPS = ("model", "provider", "status", "user", "request_name", "prompt_version")
PROPERTY_GROUP = "property:"
MAX_BUCKETS = 20_000
EXACT_LIMIT = 1_000_000     # rows read from `requests` past which percentiles come from histograms
_N = len(SUMS)
_NEGATIONS = ("not-equals", "not-contains")
BRIEF = ("requests", "cost_nusd", "unpriced", "latency_sum_us")     # the sums a brief query reads

_RAW_GROUP = {None: "NULL", "model": "r.model", "provider": "r.provider", "status": "r.status",
              "user": "r.user_id", "request_name": "r.request_name", "prompt_version": "r.prompt_version"}
_TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_read_tokens",
           "prompt_cache_write_tokens", "reasoning_tokens")
# SUMS (rollup_schema.py) over raw rows, in their order and integer units, as Cell.add_row adds them.
_RAW_SUMS = ", ".join(f"CAST(SUM({expr}) AS BIGINT)" for expr in (
    "1", "CASE WHEN r.status >= 400 OR r.status < 100 THEN 1 ELSE 0 END",
    "CASE WHEN r.cost IS NULL THEN 0 ELSE CAST(ROUND(r.cost * 1000000000) AS BIGINT) END",
    "CASE WHEN r.cost IS NULL THEN 1 ELSE 0 END", *(f"COALESCE(r.{t}, 0)" for t in _TOKENS),
    "CAST(ROUND(r.latency_ms * 1000) AS BIGINT)",
    "CASE WHEN r.ttft_ms IS NULL THEN 0 ELSE CAST(ROUND(r.ttft_ms * 1000) AS BIGINT) END",
    "CASE WHEN r.ttft_ms IS NULL THEN 0 ELSE 1 END", "CASE WHEN r.cache_reference_id IS NULL THEN 0 ELSE 1 END"))
_RAW_COLUMNS = ("r.status, r.cost, r.prompt_tokens, r.completion_tokens, r.total_tokens, "
                "r.prompt_cache_read_tokens, r.prompt_cache_write_tokens, r.reasoning_tokens, r.latency_ms, r.ttft_ms, "
                "r.cache_reference_id IS NOT NULL")


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    project: str = field(kw_only=True)  # only this project's requests; required, by name
    start: int                          # epoch ms, inclusive
    end: int                            # epoch ms, exclusive
    filter: Node = ALL
    bucket: str | None = "hour"         # minute | hour | day | None (totals only)
    group_by: str | None = None         # one of GROUPS, or property:<key>
    limit: int = 100                    # most groups reported, largest first
    brief: bool = False                 # requests, cost and mean latency only: no summary


@dataclass(frozen=True, slots=True)
class RollupPlan:
    levels: tuple[tuple[str, Family], ...]   # (bucket size, family to read it from), coarsest first
    dimension: str | None                   # the dimension column's value (rollup_dimension_*)
    filter: Node                            # conditions rewritten onto the rollup's columns
    group: str                              # SQL over the rollup row `r`
    native: bool = False                    # one row per (bucket, group), at least usually


_MODEL_COLUMNS = {"model": "NULLIF(r.model, '')", "provider": "r.provider"}
_MAIN_COLUMNS = {**_MODEL_COLUMNS, "status": "r.status"}
_MAIN_GROUP: dict[str | None, str] = {None: "NULL", "model": _MAIN_COLUMNS["model"],
                                      "provider": _MAIN_COLUMNS["provider"], "status": _MAIN_COLUMNS["status"]}
_BY_MODEL = (("day", MODEL), ("hour", MODEL), ("minute", MAIN))
_BY_STATUS = (("day", MAIN), ("hour", MAIN), ("minute", MAIN))


def _rewrite(node: Node, columns: Mapping[str, str], property_key: str | None = None,
             positive_only: bool = False) -> Node | None:
    """The tree over a rollup's columns, or None when some condition is on a column it lacks."""
    if isinstance(node, All):
        return node
    if isinstance(node, Branch):
        left = _rewrite(node.left, columns, property_key, positive_only)
        right = _rewrite(node.right, columns, property_key, positive_only)
        return None if left is None or right is None else Branch(left, node.operator, right)
    column = node.column
    if column.kind == "property":
        if property_key is None or node.key != property_key or (positive_only and node.op in _NEGATIONS):
            return None
        return replace(node, column=Column("value", "text", "r.value"))
    expr = columns.get(column.name)
    if expr is None or column.kind not in ("text", "number"):
        return None
    return replace(node, column=Column(column.name, column.kind, expr))


def _property_keys(node: Node) -> set[str]:
    if isinstance(node, Branch):
        return _property_keys(node.left) | _property_keys(node.right)
    if isinstance(node, Condition) and node.column.kind == "property" and node.key:
        return {node.key}
    return set()


def _levels(family: Family) -> tuple[tuple[str, Family], ...]:
    return tuple((level, family) for level in family.levels)


def rollup_plan(node: Node, group_by: str | None) -> RollupPlan | None:
    """The smallest rollups that answer this filter and grouping exactly, or None."""
    if group_by in (None, "model", "provider") and (tree := _rewrite(node, _MODEL_COLUMNS)) is not None:
        # A model is served by one provider in practice; when not, _rollup_cells notices.
        return RollupPlan(_BY_MODEL, None, tree, _MAIN_GROUP[group_by], native=group_by == "model")
    if group_by in _MAIN_GROUP and (tree := _rewrite(node, _MAIN_COLUMNS)) is not None:
        return RollupPlan(_BY_STATUS, None, tree, _MAIN_GROUP[group_by])
    name = {"request_name": "NULLIF(r.value, '')"}
    if group_by in (None, "request_name") and (tree := _rewrite(node, name)) is not None:
        group = "NULL" if group_by is None else name["request_name"]
        return RollupPlan(_levels(DIMENSION), "request_name", tree, group, native=group_by is not None)
    if group_by == "user" and (tree := _rewrite(node, {"user_id": "NULLIF(r.user_id, '')"})) is not None:
        return RollupPlan(_levels(USER), None, tree, "NULLIF(r.user_id, '')", native=True)
    if group_by is not None and group_by.startswith(PROPERTY_GROUP):
        key = group_by[len(PROPERTY_GROUP):]
        tree = _rewrite(node, {}, key)
        return None if tree is None else RollupPlan(_levels(DIMENSION), group_by, tree, "r.value", native=True)
    keys = _property_keys(node)
    if group_by is None and len(keys) == 1:
        # Ungrouped, one key tested positively: the requests that have a matching value.
        key = keys.pop()
        tree = _rewrite(node, {}, key, positive_only=True)
        return None if tree is None else RollupPlan(_levels(DIMENSION), PROPERTY_GROUP + key, tree, "NULL")
    return None


def segments(start: int, end: int, levels: Sequence[str]) -> list[tuple[str | None, int, int]]:
    """[start, end) cut into whole buckets of the coarsest level that fits, finer levels at the
    edges, and None (the rows themselves) for what no level covers."""
    if start >= end:
        return []
    if not levels:
        return [(None, start, end)]
    size = LEVEL_MS[levels[0]]
    first, last = -(-start // size) * size, end // size * size
    if first >= last:
        return segments(start, end, levels[1:])
    return [*segments(start, first, levels[1:]), (levels[0], first, last), *segments(last, end, levels[1:])]


Cells = dict[tuple[Any, Any], Cell]


def _only(expr: str, groups: frozenset[Any] | None) -> tuple[str, list[Any]]:
    """A condition keeping the rows of these groups (None: all)."""
    if groups is None:
        return "1=1", []
    values = [group for group in groups if group is not None]
    tests = [f"{expr} IN ({', '.join('?' * len(values))})"] if values else []
    if None in groups:
        tests.append(f"{expr} IS NULL")
    return f"({' OR '.join(tests) or '1=0'})", values


class AnalyticsQueries(EdgeReads):
    """Mixed into SQLStore: the read side of the rollups."""

    dialect: ClassVar[Dialect]

    def sparse_properties(self, node: Node) -> frozenset[tuple[str, str]]:
        raise NotImplementedError

    def analytics(self, query: AnalyticsQuery) -> dict[str, Any]:
        """Summary; with a grouping the largest `limit` groups; with a bucket the series (of those groups)."""
        bucket_ms = LEVEL_MS[query.bucket] if query.bucket else None
        percentiles = query.group_by != "user" and not query.brief
        sources: set[str] = set()
        result: dict[str, Any] = {}
        kept: frozenset[Any] | None = None
        if query.group_by is not None:
            totals = self._cells(sources, query, query.start, query.end, None, query.group_by)
            ranked = sorted(totals.items(), key=lambda item: (-item[1].sums[0], str(item[0][1])))[:query.limit]
            result["groups"] = [{"group": key[1], **cell.metrics(percentiles)} for key, cell in ranked]
            result["groups_total"] = len(totals)
            if len(totals) > query.limit:
                kept = frozenset(key[1] for key, _ in ranked)
        if not query.brief:
            summary = self._cells(sources, query, query.start, query.end, None, None)
            result["summary"] = _merged(summary.values()).metrics(True)
        if bucket_ms is not None:
            cells = self._cells(sources, query, query.start, query.end, bucket_ms, query.group_by, kept)
            result["series"] = [{"time": bucket, "group": group, **cell.metrics(percentiles)}
                                for (bucket, group), cell in sorted(cells.items(), key=_series_order)]
        result["source"] = sources.pop() if len(sources) == 1 else "mixed"
        return result

    def group_metrics(self, query: AnalyticsQuery, *, percentiles: bool = True,
                      memo: EdgeMemo | None = None) -> dict[Any, dict[str, Any]]:
        """Every group's metrics over the whole range (the alert evaluator's question): `analytics`
        without its ranking, its summary and its series, so a grouped rule is one pass. Ungrouped:
        {None: the summary}. `memo`: the rows at ranges' edges already read, by this evaluation or,
        minute by minute, by the ones before (edges.py), kept by the caller."""
        cells = self._cells(set(), query, query.start, query.end, None, query.group_by, sums_only=not percentiles,
                            memo=memo)
        if query.group_by is None:
            return {None: _merged(cells.values()).metrics(percentiles)}
        return {key[1]: cell.metrics(percentiles and query.group_by != "user") for key, cell in cells.items()}

    def _cells(self, sources: set[str], query: AnalyticsQuery, start: int, end: int, bucket_ms: int | None,
               group_by: str | None, only: frozenset[Any] | None = None, *, sums_only: bool = False,
               memo: EdgeMemo | None = None) -> Cells:
        """`sums_only`: no latency/TTFT distribution is wanted (no percentiles), so rollups ship no
        histogram columns and the rows at the edges are summed by SQL instead of one by one."""
        node, project = query.filter, query.project
        plan = rollup_plan(node, group_by)
        cells: Cells = {}
        levels = {} if plan is None else {level: family for level, family in plan.levels
                                          if bucket_ms is None or bucket_ms % LEVEL_MS[level] == 0}
        pieces = segments(start, end, list(levels))
        # The alert evaluator (a memo, totals only) reads rows by minute through the memo (edges.py),
        # even for a range too short for any rollup, so its percentiles always come from histograms.
        edges = memo if plan is not None and bucket_ms is None else None
        if edges is None and (plan is None or all(level is None for level, _, _ in pieces)):
            # Nothing to read from rollups (a filter they cannot answer, or too short a range).
            sources.add("requests")
            self._raw_cells(cells, project, node, start, end, bucket_ms, group_by, only, exact=True, sums_only=sums_only)
            return cells
        sources.add("rollups")
        for level, seg_start, seg_end in pieces:
            if level is None and edges is not None:
                self._edge_cells(cells, edges, project, node, seg_start, seg_end, group_by, only, sums_only)
            elif level is None:
                self._raw_cells(cells, project, node, seg_start, seg_end, bucket_ms, group_by, only, exact=False,
                                sums_only=sums_only)
            else:
                assert plan is not None     # no plan, no levels: every piece is rows
                self._rollup_cells(cells, project, plan, levels[level], level, seg_start, seg_end, bucket_ms, only,
                                   query.brief, sums_only=sums_only)
        return cells

    def _rollup_cells(self, cells: Cells, project: str, plan: RollupPlan, family: Family, level: str, start: int,
                      end: int, bucket_ms: int | None, only: frozenset[Any] | None, brief: bool, *,
                      sums_only: bool = False) -> None:
        # Whole output buckets read from rows of their own size are final: SQL finds the
        # percentiles, and without a GROUP BY when each row is one (bucket, group). Anything
        # else (totals, ragged edges) ships the summed histograms, to be merged in Python.
        # A brief query sums only what it reports and ships no histograms; `sums_only` (the alert
        # evaluator, no percentile wanted) ships no histograms either.
        final = bucket_ms == LEVEL_MS[level] and not brief and not sums_only
        bucket = "r.bucket" if final else (f"(r.bucket / {bucket_ms}) * {bucket_ms}" if bucket_ms else "0")
        where, params = compile_filter(plan.filter, self.dialect)
        kept, kept_params = _only(plan.group, only)
        # The primary key's leading columns: project, (dimension,) then a bucket range.
        conditions = ["r.project_id = ?", "r.bucket >= ?", "r.bucket < ?", f"({where})", kept]
        head: list[Any] = [project, start, end]
        if plan.dimension is not None:
            conditions.insert(1, "r.dimension = ?")
            head.insert(1, plan.dimension)
        keys = [expr for expr in (bucket, plan.group) if expr not in ("0", "NULL")]
        histograms = family.histograms and not brief and not sums_only
        columns = SUMS + ((LATENCY_BINS + TTFT_BINS) if histograms else ())
        params = [*head, *params, *kept_params]
        source = f"{family.table(level)} r WHERE {' AND '.join(conditions)}"
        if not final:
            total = "SUM(r.{})" if self.dialect.name == "sqlite" else "CAST(SUM(r.{}) AS BIGINT)"  # PG: numeric
            sums = [total.format(c) if not brief or c in BRIEF else "0" for c in SUMS] + [
                f"SUM(r.{c})" for c in columns[_N:]]
            sql = f"SELECT {bucket}, {plan.group}, {', '.join(sums)} FROM {source}" + (
                f" GROUP BY {', '.join(keys)}" if keys else "")
            for row in self._tuples(_bind(self.dialect, sql), params):
                if row[2]:      # an aggregate without GROUP BY answers one empty row
                    _cell(cells, (row[0], row[1])).add_rollup(row[2:], histograms)
            return
        percentiles = _percentile_sql(family.histograms)
        if plan.native:
            sql = f"SELECT {bucket}, {plan.group}, {', '.join(f'r.{c}' for c in SUMS)}, {percentiles} FROM {source}"
            rows = self._tuples(_bind(self.dialect, sql), params)
            if len({(row[0], row[1]) for row in rows}) < len(rows):
                rows = []       # a key seen twice (one model from two providers): sum them first
        if not plan.native or not rows:
            summed = ", ".join(f"CAST(SUM(r.{c}) AS BIGINT) AS {c}" for c in columns[:_N]) + "".join(
                f", SUM(r.{c}) AS {c}" for c in columns[_N:])
            inner = f"SELECT {bucket} AS b, {plan.group} AS g, {summed} FROM {source} GROUP BY {', '.join(keys)}"
            sql = f"SELECT r.b, r.g, {', '.join(f'r.{c}' for c in SUMS)}, {percentiles} FROM ({inner}) r"
            rows = self._tuples(_bind(self.dialect, sql), params)
        for row in rows:
            cells[(row[0], row[1])] = Cell.final(row[2:2 + _N], row[2 + _N:])

    def _raw_cells(self, cells: Cells, project: str, node: Node, start: int, end: int, bucket_ms: int | None,
                   group_by: str | None, only: frozenset[Any] | None, *, exact: bool, sums_only: bool = False,
                   by_time: bool = False) -> None:
        # `by_time`: a short range (a window's edge: two hours at most), read by time whatever its
        # property values; the probe for rare ones (sparse_properties) costs more than it saves there.
        bucket = f"(r.created_at / {bucket_ms}) * {bucket_ms}" if bucket_ms else "0"
        join, head = "", [project, start, end]
        head_params: list[Any] = []
        if group_by is not None and group_by.startswith(PROPERTY_GROUP):
            group = "gp.value"
            join = " JOIN request_properties gp ON gp.request_id = r.id AND gp.key = ?"
            head_params.append(group_by[len(PROPERTY_GROUP):])
        else:
            group = _RAW_GROUP[group_by]
        where, params = compile_filter(node, self.dialect, frozenset() if by_time else self.sparse_properties(node))
        kept, kept_params = _only(group, only)
        source = (f"FROM requests r{join} "
                  f"WHERE r.project_id = ? AND r.created_at >= ? AND r.created_at < ? AND ({where}) AND {kept}")
        all_params = [*head_params, *head, *params, *kept_params]
        if sums_only:
            # The same integer sums as Cell.add_row, added up by SQL: no row crosses into Python.
            keys = [expr for expr in (bucket, group) if expr not in ("0", "NULL")]
            sql = f"SELECT {bucket}, {group}, {_RAW_SUMS} {source}" + (f" GROUP BY {', '.join(keys)}" if keys else "")
            for row in self._tuples(_bind(self.dialect, sql), all_params):
                if row[2]:      # an aggregate without GROUP BY answers one empty row
                    _cell(cells, (row[0], row[1])).add_rollup(row[2:], False)
            return
        sql = f"SELECT {bucket}, {group}, {_RAW_COLUMNS} {source}"
        seen = 0
        for batch in self._tuple_batches(_bind(self.dialect, sql), all_params):
            seen += len(batch)
            if exact and seen > EXACT_LIMIT:
                # Every latency kept for exact percentiles would outgrow memory: go on with histograms.
                exact = False
                for known in cells.values():
                    known.to_histogram()
            for row in batch:
                key = (row[0], row[1])
                cell = cells.get(key)
                if cell is None:
                    cell = cells[key] = Cell(exact)
                cell.add_row(row[2:])


def _cell(cells: Cells, key: tuple[Any, Any]) -> Cell:
    cell = cells.get(key)
    if cell is None:
        cell = cells[key] = Cell(exact=False)
    return cell


def _search(column: str, rank: str, low: int, high: int) -> str:
    """SQL for the first bin in [low, high] whose cumulative count reaches `rank` (binary search)."""
    if low == high:
        return str(low)
    middle = (low + high) // 2
    return (f"CASE WHEN r.{column}{middle} >= {rank} THEN {_search(column, rank, low, middle)} "
            f"ELSE {_search(column, rank, middle + 1, high)} END")


@cache
def _percentile_sql(histograms: bool) -> str:
    """Six bin numbers (latency p50/p95/p99, TTFT p50/p95/p99) from a row of cumulative counts,
    at the nearest rank ⌈q·n⌉ in integer arithmetic (histogram.rank)."""
    parts = []
    for column, count in (("l", "r.requests"), ("t", "r.ttft_count")):
        for q in QUANTILES:
            per_cent = round(q * 100)
            rank = f"(({per_cent} * {count} + 99) / 100)"
            parts.append("NULL" if not histograms else
                         f"CASE WHEN {count} = 0 THEN NULL ELSE {_search(column, rank, 0, BINS - 1)} END")
    return ", ".join(parts)


def _bind(dialect: Dialect, sql: str) -> str:
    # compile_filter already wrote the dialect's placeholders; only ours are still "?".
    return sql if dialect.placeholder == "?" else sql.replace("?", dialect.placeholder)


def _merged(cells: Any) -> Cell:
    cells = list(cells)
    total = Cell(exact=bool(cells) and all(cell.exact for cell in cells))
    for cell in cells:
        total.merge(cell)
    return total


def _series_order(item: tuple[tuple[Any, Any], Cell]) -> tuple[int, str]:
    return item[0][0], "" if item[0][1] is None else str(item[0][1])
