"""Per-request controls asked for with Helicone-* headers, parsed once into frozen settings.

    cache.py       Helicone-Cache-* + Cache-Control → CacheSettings; the exact cache key;
                   the semantic-cache scope and the text to embed
    ratelimit.py   Helicone-RateLimit-Policy → Policy; bucket identity; response headers

Pure functions only: no I/O, no state. The proxy calls them and talks to `heliograph.state`.
"""

from __future__ import annotations

from ..errors import BadRequest


class ControlError(BadRequest):
    """A control header the client must fix: the proxy answers 400 with `message` as is.

    It is a `BadRequest`, so the proxy's existing `except GatewayError` already renders it in
    the route's OpenAI or Anthropic error shape.
    """

    code = "invalid_helicone_header"
