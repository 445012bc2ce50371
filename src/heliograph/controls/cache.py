"""Cache controls: whether a request is cached, for how long, and under which key.

Request headers (the proxy passes the *incoming* headers with lower-cased names):

    helicone-cache-enabled: true     read and save (`true` compared case-insensitively)
    helicone-cache-read / -save      read only / save only (undocumented Helicone headers)
    helicone-cache-semantic: true    also match similar earlier requests; turns on read and save
                                     when none of the three above does (seed superset, DESIGN §2)
    helicone-cache-similarity        cosine threshold in (0, 1] for semantic hits, default 0.98
    helicone-cache-seed              a separate namespace
    helicone-cache-bucket-max-size   answers kept per key, integer 1–20, default 1
    helicone-cache-ignore-keys       top-level body keys left out of the key: `a,b`, `["a","b"]`
                                     or `"a","b"`
    cache-control                    `max-age` / `s-maxage` (s-maxage wins) → TTL; default 7 days,
                                     clamped to 365 days; unparsable → default; 0 → nothing stored

Exact key (Helicone's composition, contract §4.2): the hex SHA-256 of the concatenation of

    1. the seed ('' without `Helicone-Cache-Seed`);
    2. the full incoming URL (scheme, host, path after key-in-path removal, query string);
    3. the body as it will be forwarded. With ignore-keys and a body that is a JSON object, those
       top-level keys are deleted and the object re-serialised (key order kept, no whitespace);
       nested keys of the same name stay. Any other body is used verbatim;
    4. a JSON array of `[name, value]` pairs, sorted, of every `helicone-cache*` header,
       `helicone-auth`, `authorization` (unless it carries a Google `ya29.` OAuth token, which
       rotates hourly) and — Heliograph only — `x-api-key` and `api-key`;
    5. the bucket index in decimal, appended only when it is ≥ 1.

Helicone leaves `x-api-key` (Anthropic) and `api-key` (Azure) out of the key, so two Anthropic
keys behind one Helicone key share answers. DESIGN requires that different provider keys or
tenants never share entries, so Heliograph adds them. `Cache-Control`, `Helicone-Property-*`,
`Helicone-User-Id` and session headers do not change the key; the seed, the bucket size, the
ignore-keys value and even the casing of `Helicone-Cache-Enabled: TRUE` do.

Semantic scope (`semantic_request`): only requests whose *conversation text* differs can match.
Everything else — seed, URL, credentials, model, system prompt, every other body field (stream,
temperature, tools…), the roles and non-text parts of every message — is hashed into the scope,
and only the text of non-system messages is embedded. A hit therefore never replays an answer
made for other parameters, another tenant, or a streamed request to a non-streamed one.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import ControlError

DEFAULT_MAX_AGE = 7 * 24 * 3600          # Helicone's default: 7 days
MAX_MAX_AGE = 365 * 24 * 3600            # values above are clamped, as Helicone does
MAX_BUCKET_SIZE = 20
# A false hit serves a wrong answer; a miss costs one call. bench/semantic measured 30 % false hits
# on near-miss pairs at 0.95 and 15 % at 0.98 (MiniLM), so the default errs high.
DEFAULT_SIMILARITY = 0.98

_DIGITS = re.compile(r"[0-9]{1,15}")   # more digits than any TTL or bucket size: not a number to parse
_CREDENTIAL_HEADERS = frozenset({"helicone-auth", "x-api-key", "api-key"})
# Fields of a message part that carry the text we embed; everything else must match exactly.
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
_SYSTEM_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True, slots=True)
class CacheSettings:
    read: bool
    save: bool
    seed: str = ""
    bucket_max_size: int = 1
    ignore_keys: tuple[str, ...] = ()
    max_age: int = DEFAULT_MAX_AGE        # seconds; 0 means "never store"
    semantic: bool = False
    similarity: float = DEFAULT_SIMILARITY


@dataclass(frozen=True, slots=True)
class SemanticRequest:
    scope: str          # hex digest; requests may only match within one scope
    text: str           # what to embed


def parse_cache_settings(headers: Mapping[str, str]) -> CacheSettings | None:
    """The request's cache settings, or None when it does not ask for caching.

    Raises ControlError (→ 400) for a bad bucket size, ignore-keys list or similarity. Those
    headers are only looked at when caching is on, so they can never break an uncached request.
    """
    enabled = _is_true(headers.get("helicone-cache-enabled"))
    semantic = _is_true(headers.get("helicone-cache-semantic"))
    read = enabled or _is_true(headers.get("helicone-cache-read"))
    save = enabled or _is_true(headers.get("helicone-cache-save"))
    if semantic and not (read or save):
        read = save = True
    if not (read or save):
        return None
    return CacheSettings(
        read=read, save=save,
        seed=headers.get("helicone-cache-seed", ""),
        bucket_max_size=_bucket_size(headers.get("helicone-cache-bucket-max-size")),
        ignore_keys=parse_ignore_keys(headers.get("helicone-cache-ignore-keys", "")),
        max_age=parse_max_age(headers.get("cache-control")),
        semantic=semantic,
        similarity=_similarity(headers.get("helicone-cache-similarity")) if semantic else DEFAULT_SIMILARITY,
    )


def parse_ignore_keys(value: str) -> tuple[str, ...]:
    """`a, b`, `["a","b"]` or `"a","b"` → ('a', 'b'); blanks dropped, order kept, no repeats."""
    text = value.strip()
    if not text:
        return ()
    keys: list[Any]
    if text.startswith("["):
        try:
            keys = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ControlError(f"Helicone-Cache-Ignore-Keys is not a valid JSON array: '{_clip(value)}'") from None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ControlError("Helicone-Cache-Ignore-Keys must be a JSON array of strings "
                               f"or a comma-separated list, got '{_clip(value)}'")
    else:
        try:
            keys = orjson.loads("[" + text + "]")          # Helicone's own form: "a","b"
            if not all(isinstance(k, str) for k in keys):
                raise ValueError
        except ValueError:                                  # JSONDecodeError is a ValueError
            keys = [_unquote(k.strip()) for k in text.split(",")]
    stripped = (k.strip() for k in keys)
    return tuple(dict.fromkeys(k for k in stripped if k))


def parse_max_age(cache_control: str | None) -> int:
    """TTL in seconds from a request's Cache-Control: s-maxage, else max-age, else 7 days."""
    if not cache_control:
        return DEFAULT_MAX_AGE
    max_age: int | None = None
    s_maxage: int | None = None
    for directive in cache_control.split(","):
        # No spaces around '=': Helicone does not parse `max-age = 3600` either (→ default).
        name, sep, arg = directive.strip().partition("=")
        if not sep or not _DIGITS.fullmatch(arg):
            continue
        name = name.lower()
        if name == "max-age":
            max_age = int(arg)
        elif name == "s-maxage":
            s_maxage = int(arg)
    chosen = s_maxage if s_maxage is not None else max_age
    return DEFAULT_MAX_AGE if chosen is None else min(chosen, MAX_MAX_AGE)


def cache_key(settings: CacheSettings, url: str, body: bytes, headers: Mapping[str, str],
              bucket_index: int) -> str:
    """The exact cache key of slot `bucket_index` (see the module docstring)."""
    return cache_key_fn(settings, url, body, headers)(bucket_index)


def cache_key_fn(settings: CacheSettings, url: str, body: bytes,
                 headers: Mapping[str, str]) -> Callable[[int], str]:
    """bucket index → cache key; the body is hashed once however many slots are read."""
    digest = hashlib.sha256()
    digest.update(settings.seed.encode())
    digest.update(url.encode())
    digest.update(keyed_body(body, settings.ignore_keys))
    digest.update(orjson.dumps(_partition_pairs(headers, cache_headers=True)))

    def key(bucket_index: int) -> str:
        if bucket_index < 1:
            return digest.hexdigest()
        slot = digest.copy()
        slot.update(str(bucket_index).encode())
        return slot.hexdigest()

    return key


def keyed_body(body: bytes, ignore_keys: tuple[str, ...]) -> bytes:
    """The body as it enters the key: top-level ignore-keys removed from a JSON object."""
    if not ignore_keys:
        return body
    parsed = _json_object(body)
    if parsed is None:
        return body
    for name in ignore_keys:
        parsed.pop(name, None)
    return orjson.dumps(parsed)


def semantic_request(settings: CacheSettings, url: str, body: bytes,
                     headers: Mapping[str, str]) -> SemanticRequest | None:
    """Scope and text for a semantic lookup, or None when the body has nothing to embed.

    Understands OpenAI chat (`messages`, system/developer roles in the scope), Anthropic
    messages (`system` stays in the scope), the Responses API (`input`, `instructions`) and
    legacy completions (`prompt`). A non-text part (image, tool call, tool result) stays in the
    scope verbatim, so it must match exactly.
    """
    parsed = _json_object(body)
    if parsed is None:
        return None
    for name in settings.ignore_keys:
        parsed.pop(name, None)
    texts: list[str] = []
    path = url.partition("?")[0].rstrip("/")
    if isinstance(parsed.get("messages"), list):
        parsed["messages"] = [_skeleton(m, texts) for m in parsed["messages"]]
    elif path.endswith("/responses") and "input" in parsed:
        given = parsed["input"]
        if isinstance(given, str):
            texts.append("user: " + given)
            parsed["input"] = ""
        elif isinstance(given, list):
            parsed["input"] = [_skeleton(m, texts) for m in given]
    elif path.endswith("/completions") and isinstance(parsed.get("prompt"), str):
        texts.append("user: " + parsed["prompt"])
        parsed["prompt"] = ""
    # Every piece is "<role>: <text>"; nothing but blank text leaves nothing to compare.
    if not any(piece.partition(": ")[2].strip() for piece in texts):
        return None
    text = "\n".join(texts)
    digest = hashlib.sha256(b"semantic\0")
    digest.update(settings.seed.encode() + b"\0" + url.encode() + b"\0")
    # Sorted keys: for a fuzzy match the order of body fields carries no meaning.
    digest.update(orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS) + b"\0")
    # Credentials only: the similarity threshold must not split one scope into many.
    digest.update(orjson.dumps(_partition_pairs(headers, cache_headers=False)))
    return SemanticRequest(scope=digest.hexdigest(), text=text)


def _skeleton(message: Any, texts: list[str]) -> Any:
    """The message with its embeddable text taken out (into `texts`) and the rest kept."""
    if not isinstance(message, dict) or message.get("role") in _SYSTEM_ROLES:
        return message
    role = str(message.get("role", ""))
    content = message.get("content")
    if isinstance(content, str):
        texts.append(f"{role}: {content}")
        return {**message, "content": ""}
    if isinstance(content, list):
        parts: list[Any] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in _TEXT_PART_TYPES \
                    and isinstance(part.get("text"), str):
                texts.append(f"{role}: {part['text']}")
                parts.append({**part, "text": ""})
            else:
                parts.append(part)
        return {**message, "content": parts}
    return message


def _partition_pairs(headers: Mapping[str, str], cache_headers: bool) -> list[list[str]]:
    pairs: list[list[str]] = []
    for raw_name, value in headers.items():
        name = raw_name.lower()
        if name in _CREDENTIAL_HEADERS or (cache_headers and name.startswith("helicone-cache")):
            pairs.append([name, value])
        elif name == "authorization" and not any(p.startswith("ya29.") for p in value.split()):
            pairs.append([name, value])
    pairs.sort()
    return pairs


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _bucket_size(value: str | None) -> int:
    if value is None:
        return 1
    text = value.strip()
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_BUCKET_SIZE:
        raise ControlError(f"Helicone-Cache-Bucket-Max-Size must be an integer from 1 to "
                           f"{MAX_BUCKET_SIZE}, got '{_clip(value)}'")
    return int(text)


def _similarity(value: str | None) -> float:
    if value is None:
        return DEFAULT_SIMILARITY
    try:
        threshold = float(value.strip())
    except ValueError:
        threshold = math.nan
    if not (math.isfinite(threshold) and 0 < threshold <= 1):
        raise ControlError(f"Helicone-Cache-Similarity must be a number greater than 0 and at most 1, "
                           f"got '{_clip(value)}'")
    return threshold


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def _unquote(item: str) -> str:
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'":
        return item[1:-1]
    return item


def _clip(value: str, limit: int = 64) -> str:
    """A header value safe to echo in an error message."""
    value = "".join(c for c in value if c.isprintable())
    return value if len(value) <= limit else value[:limit] + "…"
