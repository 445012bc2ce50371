"""Alert rules, their states and history, the evaluator's lease, and budget notices (migration 030).

A rule is stored as the JSON document heliograph/alerts/rules.py checked; this module never reads
inside it except for its name. State is one row per (rule, group): `group_key` is the group's value
as text ('' when the rule is not grouped). Everything is read and changed one project at a time,
like requests: another project's rule answers as an unknown one does.

The evaluator's writes (states, lease, budget notices) fail fast when SQLite is locked
(`ingest=True`: half a second, not five), like the recorder's: they are all tried again on the next
tick, and a thread blocked on a lock must not hold up a shutdown.

The lease is one row per name: taking it is an upsert that only succeeds when the row is the
caller's already or has expired, so whichever gateway writes first holds it until it stops
renewing; it works the same on SQLite (one file, many processes) and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson

from .executor import QueryMixin
from .filters import Dialect
from .outbox import _INSERT_DELIVERY, new_id

_RULE_COLUMNS = "id, project_id, name, spec, created_at, updated_at"
_STATE_COLUMNS = ("rule_id", "group_key", "project_id", "state", "value", "baseline", "requests", "since",
                  "last_breach_at", "evaluated_at")
_UPSERT_STATE = (f"INSERT INTO alert_states ({', '.join(_STATE_COLUMNS)}) VALUES ({', '.join('?' * len(_STATE_COLUMNS))}) "
                 "ON CONFLICT (rule_id, group_key) DO UPDATE SET " + ", ".join(
                     f"{c} = excluded.{c}" for c in _STATE_COLUMNS[3:]))
_EVENT_COLUMNS = ("id", "rule_id", "project_id", "group_key", "state", "value", "threshold", "baseline", "at")
_INSERT_EVENT = f"INSERT INTO alert_events ({', '.join(_EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})"


def _now() -> int:
    return int(time.time() * 1000)


def _rule(row: Mapping[str, Any]) -> dict[str, Any]:
    found = dict(row)
    found["spec"] = orjson.loads(found["spec"])
    return found


class AlertStore(QueryMixin):
    """Mixed into SQLStore: rules, states, events, leases, budget notices."""

    dialect: ClassVar[Dialect]

    # -- rules -----------------------------------------------------------------------------------------

    def create_alert(self, project: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        rule_id, at = new_id("alr"), _now()
        with self._transaction() as tx:
            tx.execute(self._q(f"INSERT INTO alert_rules ({_RULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"),
                       (rule_id, project, spec["name"], orjson.dumps(dict(spec)).decode(), at, at))
        found = self.get_alert(rule_id, project=project)
        assert found is not None
        return found

    def list_alerts(self, *, project: str | None = None) -> list[dict[str, Any]]:
        """Rules of one project, or of all (the evaluator), oldest first."""
        where, params = (" WHERE project_id = ?", (project,)) if project is not None else ("", ())
        return [_rule(row) for row in self._rows(self._q(f"SELECT {_RULE_COLUMNS} FROM alert_rules{where} "
                                                         "ORDER BY created_at, id"), params)]

    def get_alert(self, rule_id: str, *, project: str) -> dict[str, Any] | None:
        rows = self._rows(self._q(f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE id = ? AND project_id = ?"),
                          (rule_id, project))
        return _rule(rows[0]) if rows else None

    def update_alert(self, rule_id: str, spec: Mapping[str, Any], *, project: str) -> bool:
        """Replace the definition; the states start again (a changed rule is a new question)."""
        with self._transaction() as tx:
            cur = tx.execute(self._q("UPDATE alert_rules SET name = ?, spec = ?, updated_at = ? "
                                     "WHERE id = ? AND project_id = ?"),
                             (spec["name"], orjson.dumps(dict(spec)).decode(), _now(), rule_id, project))
            if int(cur.rowcount) == 0:
                return False
            tx.execute(self._q("DELETE FROM alert_states WHERE rule_id = ?"), (rule_id,))
        return True

    def delete_alert(self, rule_id: str, *, project: str) -> bool:
        with self._transaction() as tx:
            cur = tx.execute(self._q("DELETE FROM alert_rules WHERE id = ? AND project_id = ?"), (rule_id, project))
            if int(cur.rowcount) == 0:
                return False
            tx.execute(self._q("DELETE FROM alert_states WHERE rule_id = ?"), (rule_id,))
            tx.execute(self._q("DELETE FROM alert_events WHERE rule_id = ?"), (rule_id,))
        return True

    # -- states and history --------------------------------------------------------------------------

    def alert_states(self, *, project: str | None = None, rule_id: str | None = None) -> list[dict[str, Any]]:
        conditions, params = [], []
        if project is not None:
            conditions.append("project_id = ?")
            params.append(project)
        if rule_id is not None:
            conditions.append("rule_id = ?")
            params.append(rule_id)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return self._rows(self._q(f"SELECT {', '.join(_STATE_COLUMNS)} FROM alert_states{where} "
                                  "ORDER BY rule_id, group_key"), params)

    def alert_events(self, rule_id: str, *, project: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._rows(self._q(f"SELECT {', '.join(_EVENT_COLUMNS)} FROM alert_events WHERE rule_id = ? "
                                  "AND project_id = ? ORDER BY at DESC, id LIMIT ?"), (rule_id, project, limit))

    def save_evaluation(self, states: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]],
                        deliveries: Sequence[tuple[Any, ...]], forget: Sequence[tuple[str, str]] = ()) -> None:
        """One evaluation's outcome in one transaction: new states, the transitions, their notifications,
        and the (rule, group) states dropped (groups back to ok for good)."""
        with self._transaction(ingest=True) as tx:
            if forget:
                tx.executemany(self._q("DELETE FROM alert_states WHERE rule_id = ? AND group_key = ?"), forget)
            if states:
                tx.executemany(self._q(_UPSERT_STATE), [tuple(s[c] for c in _STATE_COLUMNS) for s in states])
            if events:
                tx.executemany(self._q(_INSERT_EVENT), [tuple(e[c] for c in _EVENT_COLUMNS) for e in events])
            if deliveries:
                tx.executemany(self._q(_INSERT_DELIVERY), deliveries)

    # -- the evaluator's lease -------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, ttl_ms: int, now: int | None = None) -> bool:
        """Take or renew the lease; True when `holder` has it until now + ttl_ms."""
        now = _now() if now is None else now
        with self._transaction(ingest=True) as tx:
            tx.execute(self._q("INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                               "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                               "expires_at = excluded.expires_at "
                               "WHERE leases.holder = excluded.holder OR leases.expires_at < ?"),
                       (name, holder, now + ttl_ms, now))
            row = tx.execute(self._q("SELECT holder FROM leases WHERE name = ?"), (name,)).fetchone()
        return row is not None and row["holder"] == holder

    def release_lease(self, name: str, holder: str) -> None:
        with self._transaction(ingest=True) as tx:
            tx.execute(self._q("DELETE FROM leases WHERE name = ? AND holder = ?"), (name, holder))

    def lease_holder(self, name: str) -> dict[str, Any] | None:
        rows = self._rows(self._q("SELECT holder, expires_at FROM leases WHERE name = ?"), (name,))
        return rows[0] if rows else None

    # -- budgets -----------------------------------------------------------------------------------------

    def note_budget_level(self, budget_id: str, period_start: str, level: int,
                          deliveries: Sequence[tuple[Any, ...]]) -> bool:
        """Record that a budget reached `level` % this period, with its notifications; False (and
        nothing queued) when it was recorded already."""
        with self._transaction(ingest=True) as tx:
            cur = tx.execute(self._q("INSERT INTO budget_notices (budget_id, period_start, level, at) "
                                     "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                             (budget_id, period_start, level, _now()))
            if int(cur.rowcount) != 1:
                return False
            if deliveries:
                tx.executemany(self._q(_INSERT_DELIVERY), deliveries)
        return True
