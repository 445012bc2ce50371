"""Per-request webhooks and the delivery outbox (migration 030).

Every notification Heliograph sends — an alert's, a budget's, a test, a per-request webhook call —
is first a row of `deliveries`, written in the transaction that caused it; each gateway's delivery
worker (heliograph/alerts/delivery.py) claims due rows, sends them and writes the outcome back.
So a call is at-least-once and durable: per-request webhook rows are written in the recorder's
batch transaction (`_enqueue_request_webhooks`), so a record waiting in the journal gets its
webhook calls when it is replayed, and a replayed batch (rows already stored) gets none twice.

The worker's writes (claims, outcomes) fail fast when SQLite is locked (`ingest=True`), as the
recorder's do: a claim is simply made later, an outcome not written leaves the claim to expire and
the call to be made again (at-least-once).

A claim moves the row's `next_at` past the send's timeout with a compare-and-set on the old value:
of two gateways claiming together exactly one wins, and a gateway that dies mid-send leaves a row
that becomes due again. The payload is stored as sent (`body`); the signature is made at send time
from the channel's secret. Helicone's per-request payload: request_id, user_id, request_body and
response_body (with include_data; truncated to 10 KB), model, provider, metadata{cost,
promptTokens, completionTokens, totalTokens, latencyMs}.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ..bodies import BodyError, unpack
from .executor import Executor, QueryMixin

BODY_LIMIT = 10 * 1024      # Helicone truncates bodies to 10 KB in webhook payloads
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_DELIVERY_COLUMNS = ("id", "project_id", "source", "source_id", "channel", "body", "status", "attempts",
                     "next_at", "created_at", "updated_at")
_INSERT_DELIVERY = (f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_DELIVERY_COLUMNS))})")
_WEBHOOK_COLUMNS = "id, project_id, url, secret, sample_rate, property_filters, include_data, created_at"


def _now() -> int:
    return int(time.time() * 1000)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def delivery(project_id: str, source: str, source_id: str, channel: Mapping[str, Any], body: bytes | str,
             *, at: int | None = None) -> tuple[Any, ...]:
    """One outbox row, due now, in _DELIVERY_COLUMNS order."""
    at = _now() if at is None else at
    text = body.decode() if isinstance(body, bytes) else body
    return (new_id("dlv"), project_id, source, source_id, orjson.dumps(dict(channel)).decode(), text, PENDING, 0,
            at, at, at)


def sampled(webhook_id: str, request_id: str, rate: float) -> bool:
    """Whether this request is in the webhook's sample: a hash, so replaying a batch decides the same."""
    if rate >= 100:
        return True
    digest = hashlib.sha256(f"{webhook_id}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10_000 < rate * 100


def _text(blob: bytes | None) -> str | None:
    if blob is None:
        return None
    try:
        raw = unpack(blob)
    except BodyError:
        raw = blob
    return raw[:BODY_LIMIT].decode("utf-8", "replace")


def request_payload(row: Mapping[str, Any], include_data: bool) -> bytes:
    """The per-request webhook payload, with Helicone's field names."""
    payload: dict[str, Any] = {
        "request_id": row["id"], "user_id": row.get("user_id"), "model": row.get("model"),
        "provider": row.get("provider"), "status": row.get("status"),
        "created_at": row.get("created_at"), "properties": orjson.loads(row.get("properties") or "{}"),
        "metadata": {"cost": row.get("cost"), "promptTokens": row.get("prompt_tokens"),
                     "completionTokens": row.get("completion_tokens"), "totalTokens": row.get("total_tokens"),
                     "latencyMs": row.get("latency_ms")},
    }
    if include_data:
        payload["request_body"] = _text(row.get("request_body"))
        payload["response_body"] = _text(row.get("response_body"))
    return orjson.dumps(payload)


def _matches(filters: Mapping[str, str], properties: Mapping[str, Any]) -> bool:
    lowered = {str(k).lower(): v for k, v in properties.items()}
    return all(lowered.get(key.lower()) == value for key, value in filters.items())


class Outbox(QueryMixin):
    """Mixed into SQLStore: webhooks, and the deliveries outbox."""

    # -- per-request webhooks --------------------------------------------------------------------------

    def create_webhook(self, project: str, url: str, sample_rate: float, property_filters: Mapping[str, str],
                       include_data: bool) -> dict[str, Any]:
        webhook_id, secret = new_id("whk"), "whsec_" + secrets.token_hex(24)
        with self._transaction() as tx:
            tx.execute(self._q(f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                       (webhook_id, project, url, secret, sample_rate, orjson.dumps(dict(property_filters)).decode(),
                        include_data, _now()))
        found = self.get_webhook(webhook_id, project=project)
        assert found is not None
        return found

    def list_webhooks(self, *, project: str) -> list[dict[str, Any]]:
        rows = self._rows(self._q(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE project_id = ? "
                                  "ORDER BY created_at, id"), (project,))
        return [_webhook(row) for row in rows]

    def get_webhook(self, webhook_id: str, *, project: str) -> dict[str, Any] | None:
        rows = self._rows(self._q(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = ? AND project_id = ?"),
                          (webhook_id, project))
        return _webhook(rows[0]) if rows else None

    def delete_webhook(self, webhook_id: str, *, project: str) -> bool:
        with self._transaction() as tx:
            return int(tx.execute(self._q("DELETE FROM webhooks WHERE id = ? AND project_id = ?"),
                                  (webhook_id, project)).rowcount) > 0

    def _enqueue_request_webhooks(self, tx: Executor, rows: Sequence[Mapping[str, Any]]) -> int:
        """In the recorder's transaction: one delivery per (stored row, webhook of its project that
        takes it). How many were queued."""
        if not rows:
            return 0
        hooks: dict[str, list[dict[str, Any]]] = {}
        for hook in tx.execute(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks").fetchall():
            hooks.setdefault(hook["project_id"], []).append(_webhook(hook))
        if not hooks:
            return 0
        queued = []
        at = _now()
        for row in rows:
            for hook in hooks.get(row["project_id"], ()):
                if not sampled(hook["id"], row["id"], hook["sample_rate"]):
                    continue
                if hook["property_filters"] and not _matches(hook["property_filters"],
                                                             orjson.loads(row.get("properties") or "{}")):
                    continue
                channel = {"type": "webhook", "url": hook["url"], "secret": hook["secret"]}
                queued.append(delivery(row["project_id"], "request", hook["id"], channel,
                                       request_payload(row, hook["include_data"]), at=at))
        if queued:
            tx.executemany(self._q(_INSERT_DELIVERY), queued)
            self.request_calls_queued = getattr(self, "request_calls_queued", 0) + len(queued)
        return len(queued)

    # -- the outbox --------------------------------------------------------------------------------------

    def enqueue_deliveries(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            with self._transaction() as tx:
                tx.executemany(self._q(_INSERT_DELIVERY), rows)

    def claim_deliveries(self, limit: int, hold_ms: int, now: int | None = None, *,
                         source: str | None = None, other_than: str | None = None) -> list[dict[str, Any]]:
        """Up to `limit` due deliveries (of `source` only, or of any other than `other_than`), each
        claimed by this caller alone for `hold_ms`."""
        if limit <= 0:
            return []
        now = _now() if now is None else now
        skip, params = ("", [])
        if source is not None:
            skip, params = " AND source = ?", [source]
        elif other_than is not None:
            skip, params = " AND source <> ?", [other_than]
        due = self._rows(self._q(f"SELECT id, next_at FROM deliveries WHERE status = ? AND next_at <= ?{skip} "
                                 "ORDER BY next_at LIMIT ?"), (PENDING, now, *params, limit))
        if not due:
            return []
        claimed = []
        with self._transaction(ingest=True) as tx:
            for row in due:
                cur = tx.execute(self._q("UPDATE deliveries SET next_at = ?, attempts = attempts + 1, updated_at = ? "
                                         "WHERE id = ? AND next_at = ? AND status = ?"),
                                 (now + hold_ms, now, row["id"], row["next_at"], PENDING))
                if int(cur.rowcount) == 1:
                    claimed.append(row["id"])
        if not claimed:
            return []
        marks = ", ".join("?" * len(claimed))
        rows = self._rows(self._q(f"SELECT * FROM deliveries WHERE id IN ({marks})"), claimed)
        for row in rows:
            row["channel"] = orjson.loads(row["channel"])
        return rows

    def finish_delivery(self, delivery_id: str, *, status: str, next_at: int | None, last_status: int | None,
                        last_error: str | None) -> None:
        now = _now()
        # A delivered per-request call keeps its log line but not its payload (bodies: up to 20 KB a call).
        with self._transaction(ingest=True) as tx:
            tx.execute(self._q("UPDATE deliveries SET status = ?, next_at = ?, last_status = ?, last_error = ?, "
                               "updated_at = ?, body = CASE WHEN source = 'request' AND ? = ? THEN '' ELSE body END "
                               "WHERE id = ?"),
                       (status, now if next_at is None else next_at, last_status,
                        None if last_error is None else last_error[:500], now, status, DELIVERED, delivery_id))

    def prune_deliveries(self, before_ms: int, batch: int = 10_000) -> int:
        """Forget delivered and failed deliveries queued before `before_ms` (at most `batch`); how many."""
        rows = self._rows(self._q("SELECT id FROM deliveries WHERE created_at < ? AND status <> ? LIMIT ?"),
                          (before_ms, PENDING, batch))
        if not rows:
            return 0
        ids = [row["id"] for row in rows]
        with self._transaction() as tx:
            for at in range(0, len(ids), 500):
                chunk = ids[at:at + 500]
                tx.execute(self._q(f"DELETE FROM deliveries WHERE id IN ({', '.join('?' * len(chunk))})"), chunk)
        return len(ids)

    def list_deliveries(self, *, project: str, source_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The delivery log, newest first: where, what, status, attempts; never a secret."""
        scoped, params = (" AND source_id = ?", [project, source_id]) if source_id else ("", [project])
        rows = self._rows(self._q("SELECT id, project_id, source, source_id, channel, body, status, attempts, next_at, "
                                  f"created_at, updated_at, last_status, last_error FROM deliveries WHERE project_id = ?"
                                  f"{scoped} ORDER BY created_at DESC, id LIMIT ?"), [*params, limit])
        for row in rows:
            channel = orjson.loads(row.pop("channel"))
            row["channel"] = {k: v for k, v in channel.items() if k != "secret"}
        return rows

    def delivery_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
        return {row["status"]: int(row["n"]) for row in rows}


def _webhook(row: Mapping[str, Any]) -> dict[str, Any]:
    found = dict(row)
    found["property_filters"] = orjson.loads(found["property_filters"] or "{}")
    found["include_data"] = bool(found["include_data"])
    found["sample_rate"] = float(found["sample_rate"])
    return found
