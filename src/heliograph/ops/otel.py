"""OpenTelemetry: one span per proxied call, exported over OTLP/HTTP by the official SDK.

The hot path only decides the span's ids (proxy `_trace`: the client's W3C traceparent is the
parent, our span id goes upstream in its place); the span itself is made here, in the recorder
thread, from the finished record, with the call's real start and end times, and the SDK's batch
processor exports it from its own thread. Attributes follow the GenAI semantic conventions
(`gen_ai.*`), plus Heliograph's own (`heliograph.*`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .. import __version__
from ..recording.record import RawRecord

# Path endings → gen_ai.operation.name.
OPERATIONS = (("/chat/completions", "chat"), ("/messages", "chat"), ("/responses", "chat"),
              ("/completions", "text_completion"), ("/embeddings", "embeddings"))


def operation(path: str) -> str:
    path = path.split("?", 1)[0].rstrip("/")
    for ending, name in OPERATIONS:
        if path.endswith(ending):
            return name
    return "other"


class PresetIds(IdGenerator):
    """Span and trace ids chosen on the hot path (they already went upstream in traceparent): the
    next span started in this thread takes them; otherwise ids are random."""

    def __init__(self) -> None:
        self.random = RandomIdGenerator()
        self.preset = threading.local()

    def set(self, trace_id: int | None, span_id: int) -> None:
        self.preset.trace_id, self.preset.span_id = trace_id, span_id

    def generate_span_id(self) -> int:
        span_id: int | None = getattr(self.preset, "span_id", None)
        self.preset.span_id = None
        return span_id if span_id is not None else self.random.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id: int | None = getattr(self.preset, "trace_id", None)
        self.preset.trace_id = None
        return trace_id if trace_id is not None else self.random.generate_trace_id()


class OtelSpans:
    def __init__(self, endpoint: str, service_name: str) -> None:
        self.ids = PresetIds()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": __version__}),
            id_generator=self.ids)
        self.provider.add_span_processor(BatchSpanProcessor(
            # A collector that is down must not hold up shutdown past its budget.
            OTLPSpanExporter(endpoint=endpoint + "/v1/traces", timeout=5)))
        self.tracer = self.provider.get_tracer("heliograph", __version__)

    def export(self, record: RawRecord, row: Mapping[str, Any], key_name: str) -> None:
        if record.trace is None:
            return      # not a proxied call (an async log), or tracing was off when it was made
        trace_hex, span_hex, parent_hex, flags = record.trace.split("-")
        context = None
        if parent_hex:
            parent = SpanContext(int(trace_hex, 16), int(parent_hex, 16), is_remote=True,
                                 trace_flags=TraceFlags(int(flags, 16)))
            context = trace.set_span_in_context(NonRecordingSpan(parent))
            self.ids.set(None, int(span_hex, 16))
        else:
            self.ids.set(int(trace_hex, 16), int(span_hex, 16))
        start = int(record.created_at * 1e9)
        name = operation(row["path"])
        model = row["request_model"] or row["model"]
        span = self.tracer.start_span(f"{name} {model}" if model else name, context=context, kind=SpanKind.CLIENT,
                                      start_time=start, attributes=attributes(record, row, key_name, name))
        if row["error"]:
            span.set_status(Status(StatusCode.ERROR, row["error"]))
        span.end(end_time=start + int(row["latency_ms"] * 1e6))

    def close(self) -> None:
        self.provider.shutdown()    # flushes what the batch processor still holds


def attributes(record: RawRecord, row: Mapping[str, Any], key_name: str, name: str) -> dict[str, Any]:
    prompt = row["prompt_tokens"]
    reads, writes = row["prompt_cache_read_tokens"] or 0, row["prompt_cache_write_tokens"] or 0
    values: dict[str, Any] = {
        "gen_ai.operation.name": name,
        "gen_ai.provider.name": row["provider"],
        "gen_ai.system": row["provider"],
        "gen_ai.request.model": row["request_model"],
        "gen_ai.response.model": row["response_model"],
        # The conventions count all input tokens, cached ones included (Helicone's prompt_tokens does not).
        "gen_ai.usage.input_tokens": None if prompt is None else prompt + reads + writes,
        "gen_ai.usage.output_tokens": (None if row["completion_tokens"] is None
                                       else row["completion_tokens"] + (row["reasoning_tokens"] or 0)),
        "gen_ai.usage.cache_read.input_tokens": reads or None,
        "gen_ai.usage.cache_creation.input_tokens": writes or None,
        "http.request.method": record.method,
        "http.response.status_code": row["status"],
        "server.address": urlsplit(row["target_url"]).hostname,
        "error.type": row["error"],
        "heliograph.request_id": record.id,
        "heliograph.project_id": record.project_id,
        "heliograph.key_name": key_name or None,
        "heliograph.cost_usd": row["cost"],
        "heliograph.pricing_status": row["pricing_status"],
        "heliograph.cache": "hit" if record.cache_hit else ("miss" if row["cache_enabled"] else "off"),
        "heliograph.session_id": row["session_id"],
        "heliograph.session_path": row["session_path"],
        "heliograph.user_id": row["user_id"],
        "heliograph.gateway_overhead_ms": row["gateway_overhead_ms"],
        "heliograph.ttft_ms": row["ttft_ms"],
        "heliograph.streamed": row["streamed"],
        "heliograph.partial": row["partial"],
        "heliograph.fallback_index": record.fallback_index,
        "heliograph.attempts": len(record.attempts) or None,
    }
    return {k: v for k, v in values.items() if v is not None}
