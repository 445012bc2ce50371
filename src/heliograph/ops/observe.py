"""What the recorder tells operators about each call: an access line, metrics and a span.

`CallObserver.recorded` runs in the recorder thread when a call's row is first built (so the
model, tokens and cost are known), once per call; nothing here runs on the request path. With a
writer process (writer.py) the access lines are written there instead (`log_access`), off the
proxy's core. The access line carries ids, names and numbers only: never a credential, a header
value or a body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..recording.record import RawRecord
from .logs import ACCESS
from .metrics import RecordMetrics, RuntimeMetrics

log = logging.getLogger("heliograph.observe")
access_log = logging.getLogger(ACCESS)


# The row columns read here (access line, metrics, spans): all a writer process sends back of a row.
OBSERVED_COLUMNS = (
    "provider", "model", "request_model", "response_model", "path", "target_url", "status", "error",
    "latency_ms", "ttft_ms", "gateway_overhead_ms", "streamed", "partial", "cache_enabled", "cost",
    "pricing_status", "prompt_tokens", "completion_tokens", "prompt_cache_read_tokens",
    "prompt_cache_write_tokens", "reasoning_tokens", "user_id", "session_id", "session_path",
)


class SpanExporter(Protocol):
    def export(self, record: RawRecord, row: Mapping[str, Any], key_name: str) -> None: ...
    def close(self) -> None: ...


class AccessLine:
    """The access line's text, built only if a handler formats it (JSON output reads `access`)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        f = self.fields
        # One f-string: a loop over the fields cost three times as much (bench/observer.py).
        return (f"id={f['id']} project={_text(f['project'])} key={_text(f['key'])} method={f['method']} "
                f"path={_text(f['path'])} provider={_text(f['provider'])} model={_text(f['model'])} "
                f"status={f['status']} latency_ms={f['latency_ms']} overhead_ms={f['overhead_ms']} "
                f"ttft_ms={_text(f['ttft_ms'])} prompt_tokens={_text(f['prompt_tokens'])} "
                f"completion_tokens={_text(f['completion_tokens'])} cost_usd={_text(f['cost_usd'])} "
                f"cache={f['cache']} retries={f['retries']} fallback={_text(f['fallback'])} "
                f"streamed={f['streamed']} partial={f['partial']} error={_text(f['error'])}")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if value.__class__ is float:
        return f"{value:.6g}"
    text = str(value)
    return text if text and " " not in text and '"' not in text else '"' + text.replace('"', "'") + '"'


def access_fields(record: RawRecord, row: Mapping[str, Any], key_name: str) -> dict[str, Any]:
    """The access line's fields, in order."""
    cache = "hit" if record.cache_hit else ("miss" if row["cache_enabled"] else "off")
    attempts = len(record.attempts)
    return {
        "id": record.id,
        "project": record.project_id,
        "key": key_name or record.key_id or "-",
        "method": record.method,
        "path": row["path"].split("?", 1)[0],
        "provider": row["provider"],
        "model": row["model"],
        "status": row["status"],
        "latency_ms": round(row["latency_ms"], 2),
        "overhead_ms": round(row["gateway_overhead_ms"], 3),
        "ttft_ms": row["ttft_ms"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "cost_usd": row["cost"],
        "cache": cache,
        "retries": attempts - len({a.get("fallback_index") for a in record.attempts}) if attempts else 0,
        "fallback": record.fallback_index,
        "streamed": row["streamed"],
        "partial": row["partial"],
        "error": row["error"],
    }


def log_access(record: RawRecord, row: Mapping[str, Any], key_name: str) -> None:
    """The call's access line, kept by the access handler until `flush_access`."""
    if access_log.isEnabledFor(logging.INFO):
        fields = access_fields(record, row, key_name)
        # makeRecord + handle is logger.info without its caller lookup (a stack walk per line).
        access_log.handle(access_log.makeRecord(ACCESS, logging.INFO, __file__, 0, AccessLine(fields), (), None,
                                                extra={"access": fields}))


def flush_access() -> None:
    for handler in access_log.handlers:
        handler.flush()     # the batch's access lines, in one write (logs.BatchedStreamHandler)


class CallObserver:
    """The recorder's observer (`recording.recorder.Observer`). `access`: whether it writes the
    access lines (not when a writer process does)."""

    def __init__(self, metrics: RecordMetrics, runtime: RuntimeMetrics, key_name: Callable[[str | None], str],
                 *, access: bool, spans: SpanExporter | None = None) -> None:
        self.metrics = metrics
        self.runtime = runtime
        self.key_name = key_name
        self.access = access
        self.spans = spans

    def recorded(self, record: RawRecord, row: Mapping[str, Any]) -> None:
        self.metrics.observe(record, row)
        if self.access or self.spans is not None:
            name = self.key_name(record.key_id)
            if self.access:
                log_access(record, row, name)
            if self.spans is not None:
                self.spans.export(record, row, name)

    def batch_observed(self) -> None:
        if self.access:
            flush_access()

    def batch_written(self, size: int, seconds: float) -> None:
        self.runtime.batch.observe(seconds)

    def close(self) -> None:
        if self.spans is not None:
            self.spans.close()
