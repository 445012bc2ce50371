"""Cutting the usage-only chunk out of an OpenAI-style stream whose usage Heliograph asked for.

Only complete SSE events are looked at; an incomplete one is held back until the next bytes, and
a complete one is never held (DESIGN §2: the only visible difference is `"usage": null`).
"""

from __future__ import annotations


def without_usage_chunk(data: bytes) -> tuple[bytes, bytes]:
    """Complete SSE events minus the usage-only one, and the incomplete rest to hold back."""
    end = max(data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n"))
    if end < 0:
        return b"", data
    end += 4 if data[end:end + 4] == b"\r\n\r\n" else 2
    complete, rest = data[:end], data[end:]
    if b'"choices":[]' not in complete.replace(b" ", b""):
        return complete, rest
    events = complete.replace(b"\r\n", b"\n").split(b"\n\n")
    kept = [e for e in events if e and not _is_usage_only(e)]
    return b"".join(e + b"\n\n" for e in kept), rest


def _is_usage_only(event: bytes) -> bool:
    compact = event.replace(b" ", b"")
    return b'"choices":[]' in compact and b'"usage":{' in compact
