"""Cache headers → CacheSettings, and the exact cache key's consequences (contract §4.1–§4.2)."""

from __future__ import annotations

import hashlib

import pytest

from heliograph.controls import ControlError
from heliograph.controls.cache import (
    DEFAULT_MAX_AGE, DEFAULT_SIMILARITY, CacheSettings, cache_key, cache_key_fn, keyed_body,
    parse_cache_settings, parse_ignore_keys, parse_max_age, semantic_request,
)
from heliograph.errors import BadRequest

URL = "http://127.0.0.1:8787/openai/v1/chat/completions"
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
BASE = {"helicone-cache-enabled": "true", "helicone-auth": "Bearer sk-hg-tenant-a",
        "authorization": "Bearer sk-provider-1", "content-type": "application/json"}


def settings(headers: dict[str, str]) -> CacheSettings:
    parsed = parse_cache_settings(headers)
    assert parsed is not None
    return parsed


def key(headers: dict[str, str] = BASE, body: bytes = BODY, url: str = URL, index: int = 0) -> str:
    return cache_key(settings(headers), url, body, headers, index)


# --- settings ------------------------------------------------------------------------------------

def test_not_asked_for_is_none_and_other_headers_unchecked() -> None:
    assert parse_cache_settings({}) is None
    assert parse_cache_settings({"helicone-cache-enabled": "false",
                                 "helicone-cache-bucket-max-size": "99"}) is None


def test_enabled_read_save_semantic() -> None:
    both = settings({"helicone-cache-enabled": "TRUE"})
    assert (both.read, both.save, both.semantic) == (True, True, False)
    assert both.bucket_max_size == 1 and both.max_age == DEFAULT_MAX_AGE and both.seed == ""
    read = settings({"helicone-cache-read": "true"})
    assert (read.read, read.save) == (True, False)
    save = settings({"helicone-cache-save": "True"})
    assert (save.read, save.save) == (False, True)
    semantic = settings({"helicone-cache-semantic": "true"})
    assert (semantic.read, semantic.save, semantic.semantic) == (True, True, True)
    assert semantic.similarity == DEFAULT_SIMILARITY
    assert settings({"helicone-cache-semantic": "true", "helicone-cache-similarity": "0.8"}).similarity == 0.8
    # the threshold is only validated when it is used
    assert settings({**BASE, "helicone-cache-similarity": "junk"}).similarity == DEFAULT_SIMILARITY


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "abc", "nan", "inf", ""])
def test_bad_similarity_is_a_400(value: str) -> None:
    with pytest.raises(ControlError, match="Helicone-Cache-Similarity"):
        parse_cache_settings({"helicone-cache-semantic": "true", "helicone-cache-similarity": value})


def test_bucket_size() -> None:
    assert settings({**BASE, "helicone-cache-bucket-max-size": "3"}).bucket_max_size == 3
    assert settings({**BASE, "helicone-cache-bucket-max-size": " 20 "}).bucket_max_size == 20
    with pytest.raises(ControlError) as caught:
        parse_cache_settings({**BASE, "helicone-cache-bucket-max-size": "25"})
    assert caught.value.message == "Helicone-Cache-Bucket-Max-Size must be an integer from 1 to 20, got '25'"
    assert isinstance(caught.value, BadRequest) and caught.value.status == 400


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "abc", "", "1e1", "21"])
def test_bad_bucket_size_is_a_400(value: str) -> None:
    with pytest.raises(ControlError, match="Helicone-Cache-Bucket-Max-Size must be an integer from 1 to 20"):
        parse_cache_settings({**BASE, "helicone-cache-bucket-max-size": value})


@pytest.mark.parametrize(("value", "keys"), [
    ("request_id,timestamp", ("request_id", "timestamp")),
    (" request_id , ,timestamp, ", ("request_id", "timestamp")),
    ('["request_id", "timestamp"]', ("request_id", "timestamp")),
    ('"request_id","timestamp"', ("request_id", "timestamp")),        # Helicone's working form
    ('"request_id", timestamp', ("request_id", "timestamp")),
    ("a,a,b", ("a", "b")),
    ("", ()),
    ("[]", ()),
])
def test_ignore_keys_forms(value: str, keys: tuple[str, ...]) -> None:
    assert parse_ignore_keys(value) == keys


@pytest.mark.parametrize("value", ["[request_id", "[1, 2]", '[{"a": 1}]'])
def test_bad_ignore_keys_is_a_400(value: str) -> None:
    with pytest.raises(ControlError, match="Helicone-Cache-Ignore-Keys"):
        parse_cache_settings({**BASE, "helicone-cache-ignore-keys": value})


@pytest.mark.parametrize(("header", "ttl"), [
    (None, 604800),
    ("max-age=3600", 3600),
    ("public, max-age=60", 60),
    ("max-age=3600, s-maxage=120", 120),          # s-maxage wins whatever the order
    ("s-maxage=120, max-age=3600", 120),
    ("Max-Age=10", 10),
    ("max-age = 3600", 604800),                   # Helicone does not parse spaces either
    ("max-age=abc", 604800),
    ("no-cache", 604800),
    ("max-age=999999999", 31536000),              # clamped to a year
    ("max-age=0", 0),                             # nothing will be stored
])
def test_cache_control(header: str | None, ttl: int) -> None:
    assert parse_max_age(header) == ttl


# --- exact key -----------------------------------------------------------------------------------

def test_key_composition_is_exact() -> None:
    headers = {**BASE, "helicone-cache-ignore-keys": "ts", "helicone-cache-seed": "seed-1",
               "x-api-key": "sk-ant-1", "helicone-property-team": "a", "cache-control": "max-age=60"}
    body = b'{"b": 1, "a": [1, 2], "ts": 5, "n": {"ts": 6}}'
    pairs = (b'[["authorization","Bearer sk-provider-1"],["helicone-auth","Bearer sk-hg-tenant-a"],'
             b'["helicone-cache-enabled","true"],["helicone-cache-ignore-keys","ts"],'
             b'["helicone-cache-seed","seed-1"],["x-api-key","sk-ant-1"]]')
    prefix = b"seed-1" + URL.encode() + b'{"b":1,"a":[1,2],"n":{"ts":6}}' + pairs
    s = settings(headers)
    assert cache_key(s, URL, body, headers, 0) == hashlib.sha256(prefix).hexdigest()
    assert cache_key(s, URL, body, headers, 1) == hashlib.sha256(prefix + b"1").hexdigest()
    assert cache_key(s, URL, body, headers, 12) == hashlib.sha256(prefix + b"12").hexdigest()
    key_for = cache_key_fn(s, URL, body, headers)
    assert [key_for(i) for i in range(3)] == [cache_key(s, URL, body, headers, i) for i in range(3)]


@pytest.mark.parametrize("change", [
    {"authorization": "Bearer sk-provider-2"},        # provider key partitions
    {"helicone-auth": "Bearer sk-hg-tenant-b"},       # Heliograph key (tenant) partitions
    {"x-api-key": "sk-ant-other"},                    # Heliograph addition: Anthropic key
    {"api-key": "azure-other"},                       # Heliograph addition: Azure key
    {"helicone-cache-seed": "s2"},
    {"helicone-cache-bucket-max-size": "2"},
    {"helicone-cache-ignore-keys": "user"},
    {"helicone-cache-enabled": "TRUE"},               # literal casing counts, as in Helicone
    {"helicone-cache-save": "true"},
])
def test_these_headers_partition_the_cache(change: dict[str, str]) -> None:
    assert key({**BASE, **change}) != key()


@pytest.mark.parametrize("change", [
    {"cache-control": "max-age=60"},
    {"helicone-property-feature": "support"},
    {"helicone-user-id": "u1"},
    {"helicone-session-id": "s1", "helicone-session-path": "/a"},
    {"helicone-request-id": "8d6c6f1e-0000-4000-8000-000000000000"},
    {"user-agent": "other", "accept": "text/event-stream"},
])
def test_these_headers_do_not(change: dict[str, str]) -> None:
    assert key({**BASE, **change}) == key()


def test_google_oauth_token_is_left_out() -> None:
    a = {**BASE, "authorization": "Bearer ya29.first-token"}
    b = {**BASE, "authorization": "Bearer ya29.rotated-token"}
    assert key(a) == key(b)
    no_auth = {k: v for k, v in BASE.items() if k != "authorization"}
    assert key(a) == key(no_auth)


def test_url_body_and_bucket_index_partition() -> None:
    assert key(url=URL + "?api-version=1") != key()
    assert key(url=URL.replace("127.0.0.1:8787", "localhost:8787")) != key()
    assert key(body=BODY.replace(b"hi", b"hello")) != key()
    assert len({key(index=i) for i in range(5)}) == 5
    assert key(index=0) != key(index=1)


def test_ignore_keys_remove_only_top_level_keys() -> None:
    h = {**BASE, "helicone-cache-ignore-keys": "request_id, timestamp"}
    a = b'{"model":"m","request_id":"1","timestamp":1,"meta":{"request_id":"x"}}'
    b = b'{"model": "m", "request_id": "2", "meta": {"request_id": "x"}}'      # spacing differs too
    c = b'{"model":"m","request_id":"1","timestamp":1,"meta":{"request_id":"y"}}'
    assert key(h, a) == key(h, b)
    assert key(h, a) != key(h, c)                     # the nested key still counts
    assert key(BASE, a) != key(BASE, b)               # without ignore-keys: the bytes as they are
    assert keyed_body(b"not json, request_id", ("request_id",)) == b"not json, request_id"
    assert keyed_body(b'["request_id"]', ("request_id",)) == b'["request_id"]'
    assert keyed_body(b'{"\xc3\xa9":1,"x":2}', ("x",)) == b'{"\xc3\xa9":1}'   # UTF-8, unescaped


# --- semantic scope --------------------------------------------------------------------------------

SEMANTIC = {"helicone-cache-semantic": "true", "helicone-auth": "Bearer sk-hg-tenant-a"}


def chat(user: str, system: str = "You are terse.", **extra: object) -> bytes:
    import orjson
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": user}], **extra})


def scope(body: bytes, headers: dict[str, str] = SEMANTIC, url: str = URL) -> str:
    found = semantic_request(settings(headers), url, body, headers)
    assert found is not None
    return found.scope


def test_semantic_scope_ignores_only_conversation_text() -> None:
    found = semantic_request(settings(SEMANTIC), URL, chat("What is the capital of France?"), SEMANTIC)
    assert found is not None and found.text == "user: What is the capital of France?"
    assert scope(chat("Capital city of France?")) == found.scope
    assert scope(chat("hi", system="You are verbose.")) != found.scope
    assert scope(chat("hi", stream=True)) != found.scope
    assert scope(chat("hi", temperature=0.2)) != found.scope
    assert scope(chat("hi").replace(b"gpt-4o-mini", b"gpt-4o")) != found.scope
    assert scope(chat("hi"), {**SEMANTIC, "helicone-auth": "Bearer sk-hg-tenant-b"}) != found.scope
    assert scope(chat("hi"), {**SEMANTIC, "authorization": "Bearer sk-2"}) != found.scope
    assert scope(chat("hi"), {**SEMANTIC, "helicone-cache-seed": "s"}) != found.scope
    assert scope(chat("hi"), url=URL.replace("chat/completions", "responses")) != found.scope
    # the threshold does not split the scope
    assert scope(chat("hi"), {**SEMANTIC, "helicone-cache-similarity": "0.9"}) == found.scope


def test_semantic_non_text_parts_must_match_exactly() -> None:
    import orjson

    def with_image(text: str, image: str) -> bytes:
        return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": image}}]}]})
    assert scope(with_image("what is this?", "a.png")) == scope(with_image("what's this", "a.png"))
    assert scope(with_image("what is this?", "a.png")) != scope(with_image("what is this?", "b.png"))


def test_semantic_other_shapes() -> None:
    import orjson
    anthropic = orjson.dumps({"model": "claude", "system": "Be brief.", "max_tokens": 10,
                              "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    found = semantic_request(settings(SEMANTIC), "http://h/anthropic/v1/messages", anthropic, SEMANTIC)
    assert found is not None and found.text == "user: hello"
    responses = orjson.dumps({"model": "m", "instructions": "x", "input": "hello there"})
    found = semantic_request(settings(SEMANTIC), "http://h/openai/v1/responses", responses, SEMANTIC)
    assert found is not None and found.text == "user: hello there"
    for body in (b"not json", b"[]", b'{"model":"m"}', orjson.dumps({"model": "m", "input": "embed me"}),
                 chat("   ")):
        assert semantic_request(settings(SEMANTIC), URL, body, SEMANTIC) is None
