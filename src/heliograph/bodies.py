"""How stored bodies are compressed: Zstandard frames, level 1, from a compressor kept per thread.

On the 0.1-6 KB JSON bodies of LLM calls, `zstandard` with a reused compressor takes 2-5 µs a body
where `zlib.compress(…, 1)` took 15-50 µs (most of it setting up deflate's state on each call), for
the same size within a few percent; the recorder shares its core with the proxy (issue 14).
Stores written before hold zlib streams: `unpack` reads both, told apart by the Zstandard magic
number (a zlib stream starts with 0x78 or another CMF byte, never with it).
"""

from __future__ import annotations

import threading
import zlib

import zstandard

__all__ = ["BodyError", "pack", "unpack"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BodyError = (zlib.error, zstandard.ZstdError)
_local = threading.local()


def pack(body: bytes) -> bytes:
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=1)
    return compressor.compress(body)


def unpack(blob: bytes) -> bytes:
    """The body `pack` (or an older Heliograph's zlib) stored; raises one of BodyError if `blob` is neither."""
    if blob[:4] == ZSTD_MAGIC:
        decompressor = getattr(_local, "decompressor", None)
        if decompressor is None:
            decompressor = _local.decompressor = zstandard.ZstdDecompressor()
        return decompressor.decompress(blob)
    return zlib.decompress(blob)
