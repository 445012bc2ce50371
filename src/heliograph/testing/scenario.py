"""Parse the ``X-Fake-Scenario`` header into a :class:`Scenario`.

The header is a comma-separated list of ``name`` or ``name=value`` items, for example
``status=429,fail-times=2,retry-after-ms=10`` or ``reply=Hello%2C%20world,chunk-delay=5``.
Values are URL-decoded, so a reply may contain commas (``%2C``). Unknown names and malformed
values raise :class:`ScenarioError` (answered with a 400) so a typo in a test fails loudly
instead of silently testing the happy path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

__all__ = ["Scenario", "ScenarioError", "parse_scenario"]

# A stall with no explicit length should outlast any sane client read timeout.
DEFAULT_STALL_MS = 60_000


class ScenarioError(ValueError):
    """The scenario header could not be understood."""


@dataclass(frozen=True, slots=True)
class Scenario:
    status: int | None = None
    fail_times: int | None = None
    retry_after: str | None = None
    retry_after_ms: int | None = None
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    stall_after: int | None = None
    stall_ms: int = DEFAULT_STALL_MS
    drop_after: int | None = None
    no_usage: bool = False
    cached: int | None = None
    cache_write: int | None = None
    model: str | None = None
    reply: str | None = None
    gzip: bool = False

    @property
    def fails(self) -> bool:
        """Whether this scenario answers with an error status (possibly only the first n times)."""
        return self.status is not None or self.fail_times is not None

    @property
    def error_status(self) -> int:
        # `fail-times` alone means "fail like a flaky server", hence 500.
        return self.status if self.status is not None else 500


# Item name -> (dataclass field, kind). Kinds: "int" (non-negative), "str", "flag".
_ITEMS: dict[str, tuple[str, str]] = {
    "status": ("status", "int"),
    "fail-times": ("fail_times", "int"),
    "retry-after": ("retry_after", "str"),
    "retry-after-ms": ("retry_after_ms", "int"),
    "delay": ("delay_ms", "int"),
    "chunk-delay": ("chunk_delay_ms", "int"),
    "stall-after": ("stall_after", "int"),
    "stall": ("stall_ms", "int"),
    "drop-after": ("drop_after", "int"),
    "no-usage": ("no_usage", "flag"),
    "cached": ("cached", "int"),
    "cache-write": ("cache_write", "int"),
    "model": ("model", "str"),
    "reply": ("reply", "str"),
    "gzip": ("gzip", "flag"),
}


@lru_cache(maxsize=512)
def parse_scenario(header: str) -> Scenario:
    """Parse a scenario header; cached because load tests repeat the same few strings."""
    values: dict[str, object] = {}
    for raw_item in header.split(","):
        item = raw_item.strip()
        if not item:
            continue
        name, has_value, raw_value = item.partition("=")
        name = name.strip().lower()
        spec = _ITEMS.get(name)
        if spec is None:
            raise ScenarioError(f"unknown fake scenario item {name!r}; known: {', '.join(_ITEMS)}")
        field, kind = spec
        value = unquote(raw_value.strip())
        if kind == "flag":
            if has_value and value.lower() not in ("", "1", "true", "yes"):
                raise ScenarioError(f"fake scenario item {name!r} takes no value")
            values[field] = True
        elif not has_value:
            raise ScenarioError(f"fake scenario item {name!r} needs a value ({name}=...)")
        elif kind == "int":
            if not value.isdigit():
                raise ScenarioError(f"fake scenario item {name!r} needs a non-negative integer, got {value!r}")
            values[field] = int(value)
        else:
            values[field] = value
    status = values.get("status")
    if isinstance(status, int) and not 400 <= status <= 599:
        raise ScenarioError(f"fake scenario status must be an HTTP error status (400-599), got {status}")
    return Scenario(**values)  # type: ignore[arg-type]
