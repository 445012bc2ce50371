"""Rate-limit controls: `Helicone-RateLimit-Policy` → Policy → bucket → response headers.

Grammar (contract §5.1), fields in this order, `;`-separated, no spaces, letters case-insensitive:

    <quota>;w=<seconds>[;u=request|cents][;s=user|<property>]

* quota: digits with an optional decimal part (`100`, `0.5`), > 0; no sign, no exponent.
* w: integer seconds, 60 ≤ w ≤ 31536000.
* s: `user`, or a property name of letters, digits, `_`, `-` (lower-cased). None = one bucket
  for the whole organisation.
* Seed superset (DESIGN §2), in the `u=` slot: `u=user` = `s=user`; `u=org` = no segment;
  `u=request` = Helicone's default unit. The canonical form echoed in `Helicone-RateLimit-Policy`
  is always Helicone's (`100;w=3600;u=user` → `100;w=3600;s=user`).

An invalid policy is not an error: the request proceeds and the proxy sends
`Helicone-RateLimit-Ignored: <reason>` (§5.5, fail-open).

Token bucket (§5.3): capacity = quota, refill = quota / window per second. `u=request` takes one
token before forwarding (`RateLimiter.take(cost=1)`); `u=cents` only pre-checks that the balance is
positive (`take(cost=0)`) and `charge`s the real cost in cents after the response.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ..state.base import Decision

MIN_WINDOW = 60
MAX_WINDOW = 31_536_000
MAX_SEGMENT_CHARS = 256

Unit = Literal["request", "cents"]

_QUOTA = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?")
_WINDOW = re.compile(r"[0-9]{1,12}")
_PROPERTY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FIELD_ORDER = {"w": 0, "u": 1, "s": 2}


@dataclass(frozen=True, slots=True)
class Policy:
    quota: float
    window: int
    unit: Unit = "request"
    segment: str | None = None       # None (organisation), "user", or a lower-cased property name

    @property
    def capacity(self) -> float:
        return self.quota

    @property
    def refill_per_second(self) -> float:
        return self.quota / self.window

    @property
    def canonical(self) -> str:
        text = f"{js_number(self.quota)};w={self.window}"
        if self.unit == "cents":
            text += ";u=cents"
        if self.segment is not None:
            text += f";s={self.segment}"
        return text


@functools.lru_cache(maxsize=1024)
def parse_policy(value: str | None) -> Policy | str | None:
    """A Policy; a reason string when the policy is invalid; None when there is none.

    Memoised: clients send the same few policy strings on every request, and results are frozen.
    """
    text = (value or "").strip()
    if not text:
        return None
    if any(c.isspace() for c in text):
        return "policy must not contain spaces"
    quota_text, *fields = text.split(";")
    if not _QUOTA.fullmatch(quota_text):
        return f"quota must be a positive decimal number such as 100 or 0.5, got '{_clip(quota_text)}'"
    quota = float(quota_text)
    if not (math.isfinite(quota) and quota > 0):
        return f"quota must be greater than 0, got '{_clip(quota_text)}'"

    seen: dict[str, str] = {}
    for field in fields:
        name, sep, arg = field.partition("=")
        name = name.lower()
        if not sep or name not in _FIELD_ORDER:
            return f"unknown field '{_clip(field)}'; expected w=, u= or s="
        if name in seen or any(_FIELD_ORDER[s] > _FIELD_ORDER[name] for s in seen):
            return "fields must appear once each, in the order w, u, s"
        seen[name] = arg
    if "w" not in seen:
        return "missing window w=<seconds> after the quota"

    window_text = seen["w"]
    if not _WINDOW.fullmatch(window_text) or not MIN_WINDOW <= int(window_text) <= MAX_WINDOW:
        return f"window must be an integer from {MIN_WINDOW} to {MAX_WINDOW} seconds, got '{_clip(window_text)}'"

    unit: Unit = "request"
    segment: str | None = None
    unit_text = seen.get("u", "request").lower()
    if unit_text == "cents":
        unit = "cents"
    elif unit_text == "user":
        segment = "user"
    elif unit_text not in ("request", "org"):
        return f"unit must be request or cents (or the segments user, org), got '{_clip(seen['u'])}'"

    if "s" in seen:
        if unit_text in ("user", "org"):
            return f"u={unit_text} already chooses the segment; drop s= or use u=request"
        if not _PROPERTY.fullmatch(seen["s"]):
            return f"segment must be user or a property name of letters, digits, _ and -, got '{_clip(seen['s'])}'"
        segment = seen["s"].lower()
    return Policy(quota=quota, window=int(window_text), unit=unit, segment=segment)


def bucket_id(policy: Policy, scope: str, user_id: str | None,
              properties: Mapping[str, str]) -> str | None:
    """The bucket's identity, or None when the request lacks its segment value (no bucket).

    Identity = scope (the organisation / key owner) + unit + segment type (+ property name) +
    segment value — not quota or window, so changing the policy keeps the bucket and clamps it
    (§5.2). `properties` are Helicone-Property-* values keyed by name without the prefix; the
    lookup is case-insensitive. The value comes last, so no separator inside it can be ambiguous.
    """
    head = f"{sanitize_segment(scope)}:{policy.unit}"
    if policy.segment is None:
        return head + ":org"
    if policy.segment == "user":
        value = sanitize_segment(user_id or "")
        return f"{head}:user:{value}" if value else None
    raw = properties.get(policy.segment)
    if raw is None:
        raw = next((v for k, v in properties.items() if k.lower() == policy.segment), None)
    value = sanitize_segment(raw or "")
    return f"{head}:prop:{policy.segment}:{value}" if value else None


def sanitize_segment(value: str) -> str:
    """`:` → `_`, control characters removed, trimmed, at most 256 characters (§5.2)."""
    return _CONTROL_CHARS.sub("", value.replace(":", "_")).strip()[:MAX_SEGMENT_CHARS]


def rate_limit_headers(policy: Policy, decision: Decision | None) -> list[tuple[str, str]]:
    """Response headers for an evaluated policy (§5.6); with `decision=None` (no bucket for this
    request: segment value missing) only the policy is echoed. A denied decision adds Retry-After.
    """
    headers = [("Helicone-RateLimit-Policy", policy.canonical)]
    if decision is None:
        return headers
    headers.append(("Helicone-RateLimit-Limit", js_number(policy.quota)))
    headers.append(("Helicone-RateLimit-Remaining", str(max(0, math.floor(decision.remaining)))))
    reset = _ceil_seconds(decision.reset_seconds)
    if reset > 0:
        headers.append(("Helicone-RateLimit-Reset", str(reset)))
    if not decision.allowed:
        headers.append(("Retry-After", str(max(1, _ceil_seconds(decision.retry_after_seconds)))))
    return headers


def js_number(value: float) -> str:
    """A number printed as JavaScript would: `1000`, `0.5` (never `1000.0` or `5e-05`)."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text and abs(value) >= 1e-6:
        text = format(Decimal(text), "f")
    return text


def _ceil_seconds(seconds: float) -> int:
    # Floating-point refill arithmetic leaves dust such as 1e-12 s; that is 0, not 1 second.
    return max(0, math.ceil(seconds - 1e-6))


def _clip(value: str, limit: int = 40) -> str:
    """Part of a header value, safe to echo back in a response header."""
    value = "".join(c for c in value if " " <= c <= "~")
    return value if len(value) <= limit else value[:limit] + "..."
