"""The floor: a bare pass-through proxy on Heliograph's own stack, and nothing else.

uvicorn (uvloop + httptools) serving a raw ASGI callable that forwards method, path, headers and
body with one aiohttp ClientSession and relays status, headers and body chunk by chunk (so SSE
streams through unbatched). No auth, no parsing, no recording: whatever Heliograph adds on top of
this is Heliograph's cost.

    python bench/bare_proxy.py --port 8100 --upstream http://127.0.0.1:9000 [--workers 2]

With `--workers N`, uvicorn's own worker processes share the listening socket, as `heliograph serve
--workers N` does: the floor for bench/scaling.py's ratio.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import aiohttp
import uvicorn

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer"})
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length"}


class BareProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    assert self.session is not None
                    await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.session is not None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in NOT_FORWARDED]
        query = scope["query_string"].decode("latin-1")
        url = self.upstream + scope["path"] + ("?" + query if query else "")
        async with self.session.request(scope["method"], url, headers=headers, data=body or None,
                                        allow_redirects=False) as upstream:
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": [(k, v) for k, v in upstream.raw_headers if k.lower() not in HOP_BY_HOP]})
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def from_environment() -> BareProxy:
    """A worker's app (uvicorn imports it by name in each worker process)."""
    return BareProxy(os.environ["BARE_PROXY_UPSTREAM"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="origin to forward to, e.g. http://127.0.0.1:9000")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the socket [1]")
    args = parser.parse_args()
    common: dict[str, Any] = dict(host=args.host, port=args.port, loop="uvloop", http="httptools", lifespan="on",
                                  access_log=False, log_level="warning", server_header=False, date_header=False)
    if args.workers == 1:
        uvicorn.run(BareProxy(args.upstream), **common)
        return
    os.environ["BARE_PROXY_UPSTREAM"] = args.upstream
    uvicorn.run("bare_proxy:from_environment", factory=True, workers=args.workers,
                app_dir=os.path.dirname(os.path.abspath(__file__)), **common)


if __name__ == "__main__":
    main()
