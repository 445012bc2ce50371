"""Cache hits and what they saved: each hit joined to the request it was served from.

A cache hit is recorded with cost 0 and `cache_reference_id` = the original request's id, so what
a hit saved is that original's cost and latency (minus the hit's own latency). Both rows must be in
the asked project; a hit whose original is gone (pruned, or another project) is counted apart so
the caller can estimate it. Counting hits reads only a covering index; looking up originals is a
random read per hit, so only the latest SAMPLE hits of a range are joined (every hit of a day or
two at most sites) and the rest are scaled from them per model: the figure stays exact where it can
and bounded in time at any size.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .executor import QueryMixin
from .filters import ALL, Dialect, Node, compile_filter

SAMPLE = 5_000      # hits whose originals are looked up (one random read each); the rest scale from them


class CacheStats(QueryMixin):
    """Mixed into SQLStore."""

    dialect: ClassVar[Dialect]

    def sparse_properties(self, node: Node) -> frozenset[tuple[str, str]]:
        raise NotImplementedError

    def cache_savings(self, *, project: str, start: int, end: int, node: Node = ALL,
                      sample: int = SAMPLE) -> list[dict[str, Any]]:
        """Per model, the cache hits in [start, end) matching `node`: `hits`, and over the latest
        `sample` hits (all of them when fewer) their originals: `sampled`, `matched` (original
        found), `saved_cost` (USD) and `saved_ms` (original latency − hit latency) of the matched."""
        where, params = compile_filter(node, self.dialect, self.sparse_properties(node))
        ph = self.dialect.placeholder
        hits = (f"FROM requests r WHERE r.project_id = {ph} AND r.created_at >= {ph} AND r.created_at < {ph} "
                f"AND r.cache_reference_id IS NOT NULL AND ({where})")
        head = [project, start, end, *params]
        counted = self._tuples(f"SELECT r.model, COUNT(*) {hits} GROUP BY r.model", head)
        latest = (f"SELECT r.model AS model, r.cache_reference_id AS ref, r.latency_ms AS latency {hits} "
                  f"ORDER BY r.created_at DESC LIMIT {int(sample)}")
        joined = self._tuples(
            "SELECT h.model, COUNT(*), COUNT(o.id), SUM(o.cost), SUM(CASE WHEN o.id IS NOT NULL "
            f"THEN o.latency_ms - h.latency END) FROM ({latest}) h LEFT JOIN requests o "
            f"ON o.id = h.ref AND o.project_id = {ph} GROUP BY h.model", [*head, project])
        found = {model: rest for model, *rest in joined}
        result = []
        for model, count in counted:
            sampled, matched, cost, saved = found.get(model, (0, 0, 0.0, 0.0))
            result.append({"model": model, "hits": int(count), "sampled": int(sampled), "matched": int(matched),
                           "saved_cost": float(cost or 0.0), "saved_ms": float(saved or 0.0)})
        return result
