"""Budgets as the store keeps them (migration 025), and the spend it recorded against them.

One row per (project, target kind, target, period): setting again replaces the amount and keeps the
id (and so the period's spend in the state backend). Key budgets carry the key's name when listed.
Periods and enforcement are `heliograph.budgets`; this module only reads and writes rows.

Mixed into SQLStore, so both stores share it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from .executor import QueryMixin

_UPSERT = ("INSERT INTO budgets (id, project_id, target_kind, target, usd, period, created_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, target_kind, target, period) "
           "DO UPDATE SET usd = excluded.usd")
_SELECT = ("SELECT b.id, b.project_id, b.target_kind, b.target, b.usd, b.period, b.created_at, "
           "k.name AS target_name FROM budgets b LEFT JOIN keys k ON b.target_kind = 'key' AND k.id = b.target")
# The requests column a target kind is matched against (fixed names: never from input).
_TARGET_COLUMN = {"key": "key_id", "project": "project_id", "user": "user_id"}
_CHUNK = 500


class BudgetStore(QueryMixin):
    """Mixed into SQLStore: the budgets table, and recorded spend per target and period."""

    def set_budget(self, project_id: str, target_kind: str, target: str, usd: float, period: str) -> dict[str, Any]:
        """Create or replace the budget of (project, kind, target, period); the row as listed."""
        new_id = "bud_" + secrets.token_hex(8)
        with self._transaction() as tx:
            tx.execute(self._q(_UPSERT), (new_id, project_id, target_kind, target, usd, period, int(time.time() * 1000)))
        return self._rows(self._q(f"{_SELECT} WHERE b.project_id = ? AND b.target_kind = ? AND b.target = ? "
                                  "AND b.period = ?"), (project_id, target_kind, target, period))[0]

    def list_budgets(self, *, project: str | None = None) -> list[dict[str, Any]]:
        """Budgets of one project, or of all (oldest first)."""
        where, params = (" WHERE b.project_id = ?", (project,)) if project is not None else ("", ())
        return self._rows(self._q(f"{_SELECT}{where} ORDER BY b.created_at, b.id"), params)

    def delete_budget(self, budget_id: str, *, project: str | None = None) -> bool:
        """False when there is no such budget (in `project`, when given: another project's is untouched)."""
        scoped, params = (" AND project_id = ?", (budget_id, project)) if project is not None else ("", (budget_id,))
        with self._transaction() as tx:
            return int(tx.execute(self._q("DELETE FROM budgets WHERE id = ?" + scoped), params).rowcount) > 0

    def budget_spend(self, project_id: str, target_kind: str, start_ms: int, end_ms: int,
                     targets: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Target → {"spend": USD, "unpriced_calls": n} recorded in [start, end) in the project;
        targets with no calls are absent."""
        column = _TARGET_COLUMN[target_kind]
        found: dict[str, dict[str, Any]] = {}
        for at in range(0, len(targets), _CHUNK):
            chunk = list(targets[at:at + _CHUNK])
            sql = (f"SELECT {column} AS target, COALESCE(SUM(cost), 0) AS spend, "
                   "SUM(CASE WHEN pricing_status = 'unpriced' THEN 1 ELSE 0 END) AS unpriced_calls "
                   "FROM requests WHERE project_id = ? AND created_at >= ? AND created_at < ? "
                   f"AND {column} IN ({', '.join('?' * len(chunk))}) GROUP BY {column}")
            for row in self._rows(self._q(sql), (project_id, start_ms, end_ms, *chunk)):
                found[row["target"]] = {"spend": float(row["spend"] or 0), "unpriced_calls": int(row["unpriced_calls"] or 0)}
        return found
