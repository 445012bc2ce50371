"""Rate limits from `Helicone-RateLimit-Policy`: a token bucket per segment, checked before forwarding.

Request-unit policies take one token atomically before the call; a denied call takes nothing.
Cent-unit policies only check that the balance is above zero before the call and are charged
the real cost once the answer is complete. The backend failing never fails a request (fail-open).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from ..controls.ratelimit import Policy, bucket_id, parse_policy, rate_limit_headers
from ..errors import GatewayError
from ..pricing import PriceOverride, price
from ..recording.process import decode_body
from ..recording.record import RawRecord
from ..state import Decision, RateLimiter, StateUnavailable
from ..usage import extract_usage

log = logging.getLogger("heliograph.ratelimit")

PROPERTY_PREFIX = "helicone-property-"


class RateLimited(GatewayError):
    status = 429
    openai_type = "requests"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"


@dataclass(slots=True)
class LimitPlan:
    policy: Policy
    bucket: str | None
    decision: Decision | None = None


def user_of(helicone: Mapping[str, str], body: bytes) -> str | None:
    user = helicone.get("helicone-user-id")
    if user is None and b'"user"' in body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if isinstance(parsed, dict) and isinstance(user := parsed.get("user"), str):
            return user
    return user


async def check(limiter: RateLimiter, project: str, helicone: Mapping[str, str], body: bytes,
                headers_out: list[tuple[bytes, bytes]]) -> LimitPlan | None:
    """Take from the bucket; raise RateLimited when it is empty. Adds the response headers.

    Buckets belong to the key's project (Helicone's organisation): `u=org` or no segment is one
    bucket per project, and projects never share a per-user or per-property bucket."""
    parsed = parse_policy(helicone.get("helicone-ratelimit-policy"))
    if parsed is None:
        return None
    if isinstance(parsed, str):
        headers_out.append((b"helicone-ratelimit-ignored", parsed.encode()))
        return None
    properties = {k[len(PROPERTY_PREFIX):]: v for k, v in helicone.items() if k.startswith(PROPERTY_PREFIX)}
    plan = LimitPlan(parsed, bucket_id(parsed, project, user_of(helicone, body), properties))
    if plan.bucket is not None:
        cost = 1.0 if parsed.unit == "request" else 0.0
        try:
            plan.decision = await limiter.take(plan.bucket, parsed.capacity, parsed.refill_per_second, cost)
        except StateUnavailable as exc:
            log.warning("rate limiter unavailable, letting the request through: %s", exc)
            return None
    limit_headers = [(k.lower().encode(), v.encode()) for k, v in rate_limit_headers(parsed, plan.decision)]
    headers_out.extend(limit_headers)
    if plan.decision is not None and not plan.decision.allowed:
        raise RateLimited(f"Rate limited by Helicone-RateLimit-Policy {parsed.canonical}: try again in "
                          f"{max(1, round(plan.decision.retry_after_seconds))} s.")
    return plan


async def charge_cost(limiter: RateLimiter, plan: LimitPlan, record: RawRecord,
                      overrides: Mapping[str, PriceOverride]) -> None:
    """Cent-unit policies: deduct what the answered call really cost (off the client's path)."""
    if plan.policy.unit != "cents" or plan.bucket is None or record.cache_hit:
        return
    path = record.target_url.split("?", 1)[0]
    body = decode_body(record.response_body, record.response_encoding)
    usage = extract_usage(record.family, path, body, streamed=record.streamed)
    cost, _ = price(record.provider, usage.model, usage, overrides)
    if not cost:
        return
    try:
        await limiter.charge(plan.bucket, plan.policy.capacity, plan.policy.refill_per_second, cost * 100)
    except StateUnavailable as exc:
        log.warning("rate limiter unavailable, cost not charged: %s", exc)
