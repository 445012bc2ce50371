"""Helicone-RateLimit-Policy: grammar (contract §5.1, §5.5, DESIGN §2 superset), bucket identity
(§5.2) and response headers (§5.6)."""

from __future__ import annotations

import pytest

from heliograph.controls.ratelimit import (
    Policy, bucket_id, js_number, parse_policy, rate_limit_headers, sanitize_segment,
)
from heliograph.state import Decision


def policy(text: str) -> Policy:
    parsed = parse_policy(text)
    assert isinstance(parsed, Policy), parsed
    return parsed


@pytest.mark.parametrize(("text", "canonical", "unit", "segment"), [
    ("1000;w=3600", "1000;w=3600", "request", None),
    ("1000;w=3600;u=request", "1000;w=3600", "request", None),
    ("500;w=60;u=cents", "500;w=60;u=cents", "cents", None),
    ("10;w=60;s=user", "10;w=60;s=user", "request", "user"),
    ("5000;w=86400;u=cents;s=user", "5000;w=86400;u=cents;s=user", "cents", "user"),
    ("100;w=3600;s=Organization", "100;w=3600;s=organization", "request", "organization"),
    ("100;w=3600;s=tenant_id-2", "100;w=3600;s=tenant_id-2", "request", "tenant_id-2"),
    ("0.5;w=60", "0.5;w=60", "request", None),
    ("0.125;w=60;u=cents", "0.125;w=60;u=cents", "cents", None),
    ("10.0;w=60", "10;w=60", "request", None),
    ("100;W=3600;U=CENTS;S=USER", "100;w=3600;u=cents;s=user", "cents", "user"),
    ("1;w=60", "1;w=60", "request", None),
    ("1;w=31536000", "1;w=31536000", "request", None),
    ("  10;w=60  ", "10;w=60", "request", None),
    # the seed's superset (DESIGN §2)
    ("100;w=3600;u=user", "100;w=3600;s=user", "request", "user"),
    ("100;w=3600;u=org", "100;w=3600", "request", None),
    ("100;w=3600;U=User", "100;w=3600;s=user", "request", "user"),
])
def test_valid_policies(text: str, canonical: str, unit: str, segment: str | None) -> None:
    parsed = policy(text)
    assert (parsed.canonical, parsed.unit, parsed.segment) == (canonical, unit, segment)


def test_capacity_and_refill() -> None:
    p = policy("3;w=60")
    assert p.quota == 3 and p.window == 60 and p.capacity == 3 and p.refill_per_second == 0.05


@pytest.mark.parametrize(("text", "reason"), [
    ("10;w=30", "window must be an integer from 60 to 31536000 seconds, got '30'"),   # §5.5 e2e case
    ("10;w=59", "window must be an integer from 60"),
    ("10;w=31536001", "window must be an integer from 60"),
    ("10;w=60.5", "window must be an integer"),
    ("10;w=", "window must be an integer"),
    ("0;w=60", "quota must be greater than 0, got '0'"),
    ("0.0;w=60", "quota must be greater than 0"),
    ("-1;w=60", "quota must be a positive decimal number"),
    ("1e3;w=60", "quota must be a positive decimal number"),
    (".5;w=60", "quota must be a positive decimal number"),
    ("5.;w=60", "quota must be a positive decimal number"),
    ("abc", "quota must be a positive decimal number"),
    ("10", "missing window"),
    ("10;u=cents", "missing window"),
    ("10;u=cents;w=60", "fields must appear once each, in the order w, u, s"),
    ("10;w=60;s=user;u=cents", "fields must appear once each, in the order w, u, s"),
    ("10;w=60;w=120", "fields must appear once each"),
    ("10;w=60;u=token", "unit must be request or cents"),
    ("10;w=60;u=tokens", "unit must be request or cents"),
    ("10;w=60;u=dollar", "unit must be request or cents"),
    ("10; w=60", "policy must not contain spaces"),
    ("10;w=60;s=a.b", "segment must be user or a property name"),
    ("10;w=60;s=", "segment must be user or a property name"),
    ("10;w=60;x=1", "unknown field 'x=1'"),
    ("10;w=60;", "unknown field"),
    ("10;w=60;u=user;s=team", "u=user already chooses the segment"),
    ("10;w=60;u=org;s=user", "u=org already chooses the segment"),
])
def test_invalid_policies_give_a_reason(text: str, reason: str) -> None:
    parsed = parse_policy(text)
    assert isinstance(parsed, str) and parsed.startswith(reason)
    assert all(" " <= c <= "~" for c in parsed)         # safe as a header value


@pytest.mark.parametrize("text", [None, "", "   "])
def test_no_policy(text: str | None) -> None:
    assert parse_policy(text) is None


def test_bucket_identity() -> None:
    glob = policy("10;w=60")
    assert bucket_id(glob, "org1", "u1", {}) == bucket_id(glob, "org1", "u2", {"team": "x"}) == "org1:request:org"
    assert bucket_id(glob, "org1", None, {}) != bucket_id(glob, "org2", None, {})
    # quota and window are not the identity; the unit is; u=org is the no-segment bucket
    assert bucket_id(policy("99;w=3600"), "org1", None, {}) == bucket_id(glob, "org1", None, {})
    assert bucket_id(policy("10;w=60;u=org"), "org1", None, {}) == bucket_id(glob, "org1", None, {})
    assert bucket_id(policy("10;w=60;u=cents"), "org1", None, {}) != bucket_id(glob, "org1", None, {})

    per_user = policy("10;w=60;s=user")
    assert bucket_id(per_user, "org1", "alice", {}) == "org1:request:user:alice"
    assert bucket_id(policy("5;w=600;u=user"), "org1", "alice", {}) == "org1:request:user:alice"
    assert bucket_id(per_user, "org1", "alice", {}) != bucket_id(per_user, "org1", "bob", {})
    assert bucket_id(per_user, "org1", None, {}) is None          # no user id: no bucket
    assert bucket_id(per_user, "org1", " \x00 ", {}) is None      # nothing left after sanitising

    per_team = policy("10;w=60;s=Team")
    assert bucket_id(per_team, "org1", None, {"team": "a"}) == "org1:request:prop:team:a"
    assert bucket_id(per_team, "org1", None, {"Team": "a"}) == "org1:request:prop:team:a"
    assert bucket_id(per_team, "org1", "alice", {"other": "a"}) is None
    # a user value cannot impersonate another segment
    assert bucket_id(per_user, "org1", "x:prop:team:a", {}) == "org1:request:user:x_prop_team_a"


def test_sanitize_segment() -> None:
    assert sanitize_segment("  a:b\x01c\x7f\n ") == "a_bc"
    assert sanitize_segment("x" * 300) == "x" * 256
    assert sanitize_segment("ünïcode ok") == "ünïcode ok"


def test_headers() -> None:
    p = policy("3;w=60;s=user")
    assert rate_limit_headers(p, None) == [("Helicone-RateLimit-Policy", "3;w=60;s=user")]
    allowed = rate_limit_headers(p, Decision(True, 2.0004, 19.99, 0))
    assert allowed == [("Helicone-RateLimit-Policy", "3;w=60;s=user"), ("Helicone-RateLimit-Limit", "3"),
                       ("Helicone-RateLimit-Remaining", "2"), ("Helicone-RateLimit-Reset", "20")]
    full = dict(rate_limit_headers(p, Decision(True, 3, 1e-12, 0)))
    assert "Helicone-RateLimit-Reset" not in full and full["Helicone-RateLimit-Remaining"] == "3"
    denied = dict(rate_limit_headers(p, Decision(False, 0.4, 51.9, 11.5)))
    assert denied["Retry-After"] == "12" and denied["Helicone-RateLimit-Remaining"] == "0"
    overspent = dict(rate_limit_headers(policy("0.5;w=60;u=cents"), Decision(False, -2.5, 360, 0)))
    assert overspent["Helicone-RateLimit-Remaining"] == "0"
    assert overspent["Helicone-RateLimit-Limit"] == "0.5"
    assert overspent["Retry-After"] == "1"                       # never 0 on a 429


@pytest.mark.parametrize(("value", "text"), [
    (1000.0, "1000"), (0.5, "0.5"), (0.125, "0.125"), (1.1, "1.1"), (1e-5, "0.00001"),
    (123456789012.5, "123456789012.5"), (1e16, "10000000000000000"),
])
def test_js_number(value: float, text: str) -> None:
    assert js_number(value) == text
