"""Issue 13: OpenTelemetry spans per proxied call, received by a real OTLP/HTTP server in the test
that decodes the protobuf export; W3C traceparent honoured and passed on to the provider."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway


class Receiver:
    """An OTLP/HTTP endpoint: keeps every span posted to /v1/traces, with its resource attributes."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append({
                                "name": span.name, "kind": span.kind, "resource": resource,
                                "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                                "status": span.status.code,
                                "attributes": {a.key: _value(a.value) for a in span.attributes}})
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def span(self, request_id: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.spans if s["attributes"].get("heliograph.request_id") == request_id]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no span for {request_id}; got {len(self.spans)} spans"
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture(scope="module")
def traced(fake: FakeUpstream, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("otel"), fake.url, extra_env={
        "HELIOGRAPH_OTEL_ENDPOINT": receiver.url, "HELIOGRAPH_OTEL_SERVICE_NAME": "gateway-under-test"})
    yield gw
    gw.stop()


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}]}


def test_a_span_per_call_with_genai_attributes(traced: Gateway, receiver: Receiver, fresh_fake: FakeUpstream) -> None:
    session = str(uuid.uuid4())
    r = httpx.post(traced.url + "/openai/v1/chat/completions", json=CHAT, headers={
        **traced.auth, "Authorization": "Bearer k", "Helicone-Session-Id": session, "Helicone-User-Id": "u-1"})
    assert r.status_code == 200
    span = receiver.span(r.headers["helicone-id"])
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert span["name"] == "chat gpt-4o" and span["kind"] == 3      # SPAN_KIND_CLIENT
    assert span["resource"]["service.name"] == "gateway-under-test"
    a = span["attributes"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.response.model"]
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["heliograph.cost_usd"] > 0 and a["heliograph.cache"] == "off"
    assert a["heliograph.session_id"] == session and a["http.response.status_code"] == 200
    assert a["heliograph.key_name"] == "tests" and a["heliograph.project_id"] == "default"
    assert span["end"] > span["start"] and abs(span["start"] / 1e9 - time.time()) < 60
    assert span["parent_span_id"] == ""         # no traceparent from the client: a new trace
    sent = fresh_fake.requests[-1].headers["traceparent"]
    assert sent == f"00-{span['trace_id']}-{span['span_id']}-01", "the provider's parent is our span"


def test_the_clients_traceparent_is_the_parent_and_the_provider_gets_ours(
        traced: Gateway, receiver: Receiver, fresh_fake: FakeUpstream) -> None:
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    r = httpx.post(traced.url + "/openai/v1/chat/completions", json={**CHAT, "stream": True}, headers={
        **traced.auth, "Authorization": "Bearer k", "traceparent": f"00-{trace_id}-{parent}-01",
        "tracestate": "vendor=1"})
    span = receiver.span(r.headers["helicone-id"])
    assert span["trace_id"] == trace_id and span["parent_span_id"] == parent
    assert span["attributes"]["heliograph.streamed"] is True and "heliograph.ttft_ms" in span["attributes"]
    headers = fresh_fake.requests[-1].headers
    assert headers["traceparent"] == f"00-{trace_id}-{span['span_id']}-01" and headers["tracestate"] == "vendor=1"


def test_an_unsampled_parent_is_honoured_and_errors_are_marked(
        traced: Gateway, receiver: Receiver, fresh_fake: FakeUpstream) -> None:
    trace_id = uuid.uuid4().hex
    r = httpx.post(traced.url + "/openai/v1/chat/completions", json=CHAT, headers={
        **traced.auth, "Authorization": "Bearer k", "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-00"})
    assert fresh_fake.requests[-1].headers["traceparent"].endswith("-00")     # still propagated, unsampled
    failed = httpx.post(traced.url + "/openai/v1/chat/completions", json=CHAT, headers={
        **traced.auth, "Authorization": "Bearer k", "X-Fake-Scenario": "status=500"})
    span = receiver.span(failed.headers["helicone-id"])
    assert span["status"] == 2 and span["attributes"]["error.type"] == "http_500"   # STATUS_CODE_ERROR
    traced.record(r.headers["helicone-id"])
    assert not [s for s in receiver.spans if s["trace_id"] == trace_id], "an unsampled trace was exported"


def test_no_tracing_without_an_endpoint(gateway: Gateway, fresh_fake: FakeUpstream, tmp_path: Path) -> None:
    httpx.post(gateway.url + "/openai/v1/chat/completions", json=CHAT,
               headers={**gateway.auth, "Authorization": "Bearer k", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert fresh_fake.requests[-1].headers["traceparent"] == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
