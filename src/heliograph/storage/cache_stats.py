"""Cache hits and what they saved: each hit joined to the request it was served from.

A cache hit is recorded with cost 0 and `cache_reference_id` = the original request's id, so what
a hit saved is that original's cost and latency (minus the hit's own latency). Both rows must be in
the asked project; a hit whose original is gone (pruned, or another project) is counted apart so
the caller can estimate it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from .filters import ALL, Dialect, Node, compile_filter


class CacheStats:
    """Mixed into SQLStore."""

    dialect: ClassVar[Dialect]

    def _tuple_batches(self, sql: str, params: Sequence[Any] = (), size: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
        raise NotImplementedError

    def sparse_properties(self, node: Node) -> frozenset[tuple[str, str]]:
        raise NotImplementedError

    def cache_savings(self, *, project: str, start: int, end: int, node: Node = ALL) -> list[dict[str, Any]]:
        """Per model, the cache hits in [start, end) matching `node`: `hits`, `matched` (original found),
        `saved_cost` (USD) and `saved_ms` (original latency − hit latency) over the matched ones."""
        where, params = compile_filter(node, self.dialect, self.sparse_properties(node))
        ph = self.dialect.placeholder
        sql = ("SELECT r.model, COUNT(*), COUNT(o.id), SUM(o.cost), "
               "SUM(CASE WHEN o.id IS NOT NULL THEN o.latency_ms - r.latency_ms END) "
               "FROM requests r LEFT JOIN requests o ON o.id = r.cache_reference_id AND o.project_id = r.project_id "
               f"WHERE r.project_id = {ph} AND r.created_at >= {ph} AND r.created_at < {ph} "
               f"AND r.cache_reference_id IS NOT NULL AND ({where}) GROUP BY r.model")
        rows = [row for batch in self._tuple_batches(sql, [project, start, end, *params]) for row in batch]
        return [{"model": model, "hits": int(hits), "matched": int(matched), "saved_cost": float(cost or 0.0),
                 "saved_ms": float(saved or 0.0)} for model, hits, matched, cost, saved in rows]
