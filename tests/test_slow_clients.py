"""Slow and idle clients over raw sockets: header and body timeouts, and the connection bound.

Clients that never finish their headers or bodies, or just hold sockets open, must neither keep a
connection forever nor use up the gateway's open files; a real call still gets through.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from heliograph import server
from heliograph.testing import FakeUpstream

from .conftest import Gateway, start_gateway

OPEN_FILES = 1024      # the gateway's open-file limit (soft and hard), as on a default Linux account
MAX_CONNECTIONS = 400  # well inside what 1,024 files allow at two descriptors a connection
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def guarded(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("slow"), fake.url, extra_env={
        "HELIOGRAPH_HEADER_TIMEOUT": "1", "HELIOGRAPH_BODY_TIMEOUT": "1",
        "HELIOGRAPH_KEEP_ALIVE_TIMEOUT": "2", "HELIOGRAPH_MAX_CONNECTIONS": str(MAX_CONNECTIONS)})
    resource.prlimit(gw.process.pid, resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    yield gw
    assert gw.process.poll() is None, gw.log()
    assert "Too many open files" not in gw.log()
    gw.stop()


def connect(gw: Gateway, timeout: float = 10.0) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the gateway closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_by_gateway(sock: socket.socket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        read_all(sock)
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def request_head(gw: Gateway, path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nAuthorization: Bearer sk-test\r\n"
            f"Helicone-Auth: {gw.auth['Helicone-Auth']}\r\n\r\n").encode()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_connection_that_sends_half_its_headers_is_closed_after_the_header_timeout(guarded: Gateway) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
        started = time.monotonic()
        raw = read_all(sock)
        waited = time.monotonic() - started
    assert 0.8 < waited < 5
    status, headers, body = split_response(raw)
    assert status == 408 and headers["connection"] == "close"
    assert orjson.loads(body)["error"]["code"] == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(guarded: Gateway) -> None:
    with connect(guarded) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
        assert 0.8 < time.monotonic() - started < 5


def test_a_slow_trickle_of_header_bytes_does_not_reset_the_header_clock(guarded: Gateway) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"POST /openai/v1/chat/completions HTTP/1.1\r\n")
        started = time.monotonic()
        sock.settimeout(0.3)
        ended = False
        while not ended and time.monotonic() - started < 4:
            try:  # a header byte every 0.3 s: each alone would beat the 1 s timeout
                ended = not sock.recv(65536) or True
            except TimeoutError:
                sock.sendall(b"X")
            except ConnectionResetError:
                ended = True
        assert ended and time.monotonic() - started < 2


def test_a_stalled_body_gets_a_408_in_openai_shape(guarded: Gateway) -> None:
    with connect(guarded) as sock:
        sock.sendall(request_head(guarded, "/openai/v1/chat/completions", len(BODY)) + BODY[:10])
        started = time.monotonic()
        raw = read_all(sock)
        assert 0.8 < time.monotonic() - started < 5
    status, headers, body = split_response(raw)
    assert status == 408 and headers["connection"] == "close" and headers["helicone-id"]
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_timeout"
    assert "nothing was received for 1 s" in error["message"]


def test_a_stalled_body_gets_a_408_in_anthropic_shape(guarded: Gateway) -> None:
    with connect(guarded) as sock:
        sock.sendall(request_head(guarded, "/anthropic/v1/messages", len(BODY)))
        raw = read_all(sock)
    status, _, body = split_response(raw)
    assert status == 408
    payload = orjson.loads(body)
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"


def test_a_body_sent_in_slow_chunks_that_keep_coming_is_accepted(guarded: Gateway, fresh_fake: FakeUpstream) -> None:
    with connect(guarded) as sock:
        sock.sendall(request_head(guarded, "/openai/v1/chat/completions", len(BODY)))
        for start in range(0, len(BODY), len(BODY) // 3 + 1):  # gaps below the 1 s body timeout, 1.2 s in all
            time.sleep(0.4)
            sock.sendall(BODY[start:start + len(BODY) // 3 + 1])
        sock.settimeout(10)
        status, _, _ = split_response(sock.recv(65536))
    assert status == 200


def test_idle_sockets_beyond_the_connection_limit_do_not_lock_out_real_calls(
        guarded: Gateway, fresh_fake: FakeUpstream) -> None:
    """1,100 sockets against a gateway with 1,024 open files: idle and half-sent ones give way."""
    idle: list[socket.socket] = []
    try:
        for i in range(1100):
            sock = connect(guarded)
            if i % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ga")
            idle.append(sock)
        # Served at once: the oldest idle sockets were closed to make room.
        r = httpx.post(guarded.url + "/openai/v1/chat/completions", content=BODY, timeout=10,
                       headers={**guarded.auth, "Authorization": "Bearer sk-test"})
        assert r.status_code == 200
        # Every one of them is closed, to make room or by the header timeout.
        assert all(closed_by_gateway(sock) for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(guarded.url + "/healthz").status_code == 200
    assert guarded.process.poll() is None


def test_new_connections_get_a_503_when_every_connection_is_in_a_request(
        fake: FakeUpstream, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, fake.url, extra_env={"HELIOGRAPH_MAX_CONNECTIONS": "2"})
    busy: list[socket.socket] = []
    try:
        head = request_head(gw, "/openai/v1/chat/completions", len(BODY)).replace(
            b"\r\n\r\n", b"\r\nX-Fake-Scenario: delay=1500\r\n\r\n")
        for _ in range(2):
            sock = connect(gw)
            sock.sendall(head + BODY)
            busy.append(sock)
        time.sleep(0.3)
        with connect(gw) as extra:
            status, headers, body = split_response(read_all(extra))
        assert status == 503 and headers["retry-after"] == "1"
        assert orjson.loads(body)["error"]["code"] == "gateway_overloaded"
        for sock in busy:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert httpx.post(gw.url + "/openai/v1/chat/completions", content=BODY,
                          headers={**gw.auth, "Authorization": "Bearer sk-test"}).status_code == 200
    finally:
        for sock in busy:
            sock.close()
        gw.stop()


def test_the_connection_bound_fits_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"now": (1024, 1024)}
    monkeypatch.setattr(server.resource, "getrlimit", lambda _: limits["now"])
    monkeypatch.setattr(server.resource, "setrlimit", lambda _, value: limits.update(now=value))
    assert server.connection_budget(10_000) == (1024 - server.RESERVED_FILES) // 2
    limits["now"] = (1024, 65536)  # a low soft limit is raised as far as the bound needs
    assert server.connection_budget(10_000) == 10_000
    assert limits["now"] == (2 * 10_000 + server.RESERVED_FILES, 65536)
    limits["now"] = (1024, 65536)
    assert server.connection_budget(0) == (65536 - server.RESERVED_FILES) // 2
