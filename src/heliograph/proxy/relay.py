"""Relay the upstream answer to the client untouched, keeping a copy for the record.

Streams are teed: each chunk goes to the client as soon as it arrives. The one exception is
the usage-only chunk of an OpenAI-style stream whose usage Heliograph asked for: the client did
not ask for it, so it is cut out (DESIGN §2), which needs whole SSE events; only an incomplete
event is held back, never a complete one.

A client that goes away cancels the relay and closes the upstream; an upstream that stalls or
breaks mid-stream ends the client's stream with a final error event. Either way the record says
`partial`, unless the client had been sent the stream's last event: openai-python closes the
connection at `data: [DONE]`, often before the upstream's end of body reaches the gateway, and
that call had its whole answer.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from ..errors import sse_error_event
from ..recording.record import RawRecord
from .context import Call, Receive, Send
from .forward import Target
from .sse import without_usage_chunk
from .translate_relay import Translation


DROPPED_RESPONSE_HEADERS = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"trailer", b"upgrade"})
# When the body is changed (usage chunk cut, translated), its length and type are ours to set.
REWRITTEN_DROPPED = DROPPED_RESPONSE_HEADERS | {b"content-length", b"content-encoding"}
SMALL_BODY = 1 << 20
# The last event of a whole stream, by API (chat completions, Anthropic messages, Responses).
LAST_EVENTS = (b"data: [DONE]", b"event: message_stop", b"event: response.completed",
               b"event: response.incomplete", b"event: response.failed")


def upstream_headers(upstream: aiohttp.ClientResponse, streaming: bool, rewritten: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers that go back to the client."""
    dropped = REWRITTEN_DROPPED if rewritten else DROPPED_RESPONSE_HEADERS
    headers = [(name, value) for name, value in upstream.raw_headers if name.lower() not in dropped]
    if streaming:
        headers.append((b"x-accel-buffering", b"no"))
    return headers


async def relay(call: Call, upstream: aiohttp.ClientResponse, target: Target, overhead_ms: float,
                answered_at: float, strip_usage: bool) -> None:
    record = call.record
    assert record is not None
    content_type = upstream.headers.get("content-type", "")
    streaming = content_type.startswith("text/event-stream")
    strip_usage = strip_usage and streaming
    record.status = upstream.status
    record.streamed = streaming
    record.response_encoding = upstream.headers.get("content-encoding", "")
    translator = Translation(target, streaming, upstream.status) if target.translate else None
    try:
        overhead_ms += (time.perf_counter() - answered_at) * 1000
        record.gateway_overhead_ms = overhead_ms
        base = upstream_headers(upstream, streaming, strip_usage or translator is not None)
        if translator is not None and not streaming:
            record.response_body = await upstream.read()
            status, body = translator.whole(record.response_body)
            base = [h for h in base if h[0].lower() != b"content-type"]
            base += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await call.respond(status, _headers(call, base, status, overhead_ms), body)
            return
        await call.respond(upstream.status, _headers(call, base, upstream.status, overhead_ms))
        if streaming:
            await _relay_stream(upstream, call.receive, call.send, record, call.started, strip_usage, translator)
        elif upstream.content_length is not None and upstream.content_length <= SMALL_BODY:
            record.response_body = await upstream.read()
            await call.send({"type": "http.response.body", "body": record.response_body})
        else:
            await _relay_chunks(upstream, call.send, record)
    finally:
        upstream.release()


def _headers(call: Call, base: list[tuple[bytes, bytes]], status: int, overhead_ms: float) -> list[tuple[bytes, bytes]]:
    upstream_ms = call.record.upstream_ms if call.record is not None else None
    return call.response_headers(base, success=status < 400, overhead_ms=overhead_ms, upstream_ms=upstream_ms or 0.0)


async def _relay_chunks(upstream: aiohttp.ClientResponse, send: Send, record: RawRecord) -> None:
    parts: list[bytes] = []
    try:
        async for chunk in upstream.content.iter_any():
            parts.append(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        record.partial = True
        record.error = _stream_error_class(exc)
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        record.partial, record.error = True, "shutdown"
        raise
    finally:
        record.response_body = b"".join(parts)


async def _relay_stream(upstream: aiohttp.ClientResponse, receive: Receive, send: Send,
                        record: RawRecord, started: float, strip_usage: bool,
                        translator: Translation | None) -> None:
    parts: list[bytes] = []
    task = asyncio.current_task()
    assert task is not None
    client_gone = False

    async def watch_disconnect() -> None:
        nonlocal client_gone
        while (await receive())["type"] != "http.disconnect":
            pass
        client_gone = True
        task.cancel()

    watcher = asyncio.create_task(watch_disconnect())
    pending = b""
    sent = b""      # the end of what the client was sent: its last event, whole, once it was sent
    try:
        async for chunk in upstream.content.iter_any():
            if record.ttft_ms is None:
                record.ttft_ms = (time.perf_counter() - started) * 1000
            parts.append(chunk)
            if strip_usage:
                chunk, pending = without_usage_chunk(pending + chunk)
            elif translator is not None:
                chunk = translator.feed(chunk)
            if not chunk:
                continue
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent = sent[-32:] + chunk
        if translator is not None:
            pending = translator.close()
        if pending:
            await send({"type": "http.response.body", "body": pending, "more_body": True})
            sent = sent[-32:] + pending
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        if not client_gone:
            # The server cut the stream (shutdown's grace period is over): the answer is incomplete.
            record.partial, record.error = True, "shutdown"
            raise
        task.uncancel()
        upstream.close()
        if not any(event in sent for event in LAST_EVENTS):
            record.partial = True
            record.error = "client_disconnected"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        record.partial = True
        record.error = _stream_error_class(exc)
        upstream.close()
        await send({"type": "http.response.body", "more_body": False,
                    "body": pending + sse_error_event(translator.client_family if translator else record.family,
                                                      _stream_error_message(exc))})
    finally:
        watcher.cancel()
        record.response_body = b"".join(parts)


def _stream_error_class(exc: BaseException) -> str:
    return "upstream_timeout" if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)) else "stream_interrupted"


def _stream_error_message(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "The provider stopped sending before the stream finished (read timeout); the answer is incomplete."
    return f"The provider's stream broke off before it finished ({type(exc).__name__}); the answer is incomplete."
