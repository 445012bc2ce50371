"""Record quality: a streamed answer is stored assembled (its SSE kept apart), and calls that bill
nothing are `not_billable`, not `unpriced`. In the recorder's row, then through `heliograph serve`."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from heliograph.bodies import pack, unpack
from heliograph.pricing import billable
from heliograph.recording.process import to_row
from heliograph.recording.record import RawRecord
from heliograph.testing import FakeUpstream, openai_api
from heliograph.testing.content import Prompt, make_answer

from .conftest import Gateway

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about the harbour lights tonight"}]


def raw_record(path: str, response: bytes, *, method: str = "POST", streamed: bool = False, status: int = 200,
               family: str = "openai", helicone: dict[str, str] | None = None) -> RawRecord:
    return RawRecord(id="r-1", created_at=1_750_000_000.0, provider="openai" if family == "openai" else family,
                     family=family, method=method, path=path, target_url=f"https://upstream.test{path}",
                     key_id=None, helicone=helicone or {}, request_body=b'{"model": "gpt-4o-mini"}', status=status,
                     response_body=response, streamed=streamed)


def chat_stream() -> tuple[bytes, dict[str, Any]]:
    reply = make_answer(Prompt("gpt-4o-mini", "harbour lights", 20, None, None), None)
    body = openai_api.chat_body(reply, "abc", 1_750_000_000)
    del body["choices"][0]["message"]["annotations"]
    return b"".join(openai_api.chat_frames(reply, "abc", 1_750_000_000, True)), body


# -- the recorder's row ------------------------------------------------------------------------------

def test_a_streamed_answer_is_stored_assembled_with_its_sse_apart() -> None:
    sse, expected = chat_stream()
    row = to_row(raw_record("/v1/chat/completions", sse, streamed=True), {})
    assert orjson.loads(unpack(row["response_body"])) == expected
    assert unpack(row["response_stream"]) == sse
    assert row["pricing_status"] == "priced" and row["cost"] > 0


def test_a_stream_that_cannot_be_assembled_keeps_the_sse_as_its_body() -> None:
    sse = b'data: {"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}\n\n'
    row = to_row(raw_record("/v1beta/models/gemini-2.5-flash:streamGenerateContent", sse, streamed=True), {})
    assert unpack(row["response_body"]) == sse == unpack(row["response_stream"])


def test_bodies_are_stored_as_zstandard_and_older_zlib_bodies_still_read() -> None:
    row = to_row(raw_record("/v1/chat/completions", b'{"choices": []}'), {})
    assert row["request_body"][:4] == row["response_body"][:4] == b"\x28\xb5\x2f\xfd"   # Zstandard frames
    assert unpack(row["response_body"]) == b'{"choices": []}' and unpack(pack(b"")) == b""
    assert unpack(zlib.compress(b'{"model": "gpt-4o"}', 1)) == b'{"model": "gpt-4o"}'   # a store from before


def test_json_answers_have_no_stream_and_omitted_responses_keep_none() -> None:
    sse, _ = chat_stream()
    plain = to_row(raw_record("/v1/chat/completions", b'{"choices": []}'), {})
    assert plain["response_stream"] is None
    omitted = to_row(raw_record("/v1/chat/completions", sse, streamed=True, helicone={"helicone-omit-response": "true"}), {})
    assert omitted["response_stream"] is None
    assert orjson.loads(unpack(omitted["response_body"])) == {"model": "gpt-4o-mini"}


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/v1/models", b'{"object": "list", "data": []}', 200),
    ("GET", "/v1/models/gpt-4o", b'{"id": "gpt-4o", "object": "model"}', 200),
    ("POST", "/v1/messages/count_tokens", b'{"input_tokens": 12}', 200),
    ("POST", "/v1/files", b'{"id": "file-1", "object": "file"}', 200),
    ("POST", "/v1/batches", b'{"id": "batch_1", "object": "batch"}', 200),
    ("GET", "/v1/batches/batch_1", b'{"id": "batch_1", "object": "batch"}', 200),
    # A stored response read back reports the usage it was billed for once already.
    ("GET", "/v1/responses/resp_1", b'{"object": "response", "model": "gpt-4o-mini", "usage": '
                                    b'{"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}', 200),
    ("POST", "/v1/chat/completions", b'{"error": {"message": "slow down"}}', 429),
])
def test_calls_that_bill_nothing_are_not_billable(method: str, path: str, body: bytes, status: int) -> None:
    row = to_row(raw_record(path, body, method=method, status=status), {})
    assert (row["cost"], row["pricing_status"]) == (0.0, "not_billable")


def test_usage_without_a_price_is_still_unpriced() -> None:
    body = b'{"model": "my-finetune-xyz", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}'
    row = to_row(raw_record("/v1/chat/completions", body), {})
    assert (row["cost"], row["pricing_status"]) == (None, "unpriced")


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/chat/completions", True),
    ("POST", "/openai/deployments/gpt4/chat/completions", True),
    ("POST", "/models/chat/completions", True),                      # Azure AI model inference
    ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", True),
    ("POST", "/v1beta/models/gemini-2.5-flash:countTokens", False),
    ("POST", "/v1/messages", True),
    ("POST", "/v1/messages/batches", False),
    ("POST", "/v1/uploads/up_1/parts", False),
    ("GET", "/v1/chat/completions/chatcmpl-1", False),
    ("DELETE", "/v1/responses/resp_1", False),
])
def test_billable_endpoints(method: str, path: str, expected: bool) -> None:
    assert billable(method, path) is expected


# -- through a real gateway ------------------------------------------------------------------------

_open: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def openai_client(gateway: Gateway) -> openai.OpenAI:
    made = openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key="sk-provider", max_retries=0,
                         default_headers=gateway.auth)
    _open.append(made)
    return made


def anthropic_client(gateway: Gateway) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-ant", max_retries=0,
                               default_headers=gateway.auth)
    _open.append(made)
    return made


def with_raw_stream(gateway: Gateway, request_id: str) -> dict[str, Any]:
    gateway.record(request_id)      # waits for the recorder
    r = httpx.get(f"{gateway.url}/api/v1/request/{request_id}", params={"includeRawStream": "true"},
                  headers={"Authorization": f"Bearer {gateway.key}"})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def test_streamed_openai_call_is_recorded_as_a_chat_completion(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    request_id = raw.headers["helicone-id"]

    record = gateway.record(request_id)
    body = record["response_body"]
    assert record["streamed"] is True and "response_stream" not in record
    assert body["object"] == "chat.completion" and body["id"] == chunks[0].id
    assert body["choices"][0]["message"] == {"role": "assistant", "content": text, "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == record["completion_tokens"]

    sse = with_raw_stream(gateway, request_id)["response_stream"]
    assert sse.startswith("data: {") and sse.endswith("data: [DONE]\n\n") and '"chat.completion.chunk"' in sse


def test_streamed_anthropic_call_is_recorded_as_a_message(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    with anthropic_client(gateway).messages.stream(model="claude-haiku-4-5", max_tokens=100,
                                                   messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["helicone-id"]

    record = with_raw_stream(gateway, request_id)
    body = record["response_body"]
    assert body["type"] == "message" and body["id"] == final.id
    assert body["content"] == [{"type": "text", "text": text}]
    assert body["stop_reason"] == final.stop_reason == "end_turn"
    assert body["usage"]["output_tokens"] == final.usage.output_tokens
    assert record["response_stream"].startswith("event: message_start\n")
    assert "event: message_stop" in record["response_stream"]


def test_a_json_answer_has_a_null_raw_stream(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    record = with_raw_stream(gateway, raw.headers["helicone-id"])
    assert record["response_stream"] is None
    assert record["response_body"]["choices"][0]["message"]["content"] == raw.parse().choices[0].message.content
    bad = httpx.get(f"{gateway.url}/api/v1/request/{raw.headers['helicone-id']}",
                    params={"includeRawStream": "yes"}, headers={"Authorization": f"Bearer {gateway.key}"})
    assert bad.status_code == 400 and "includeRawStream" in bad.json()["error"]


def test_model_list_and_token_count_are_not_billable(gateway: Gateway, fresh_fake: FakeUpstream) -> None:
    models = openai_client(gateway).models.with_raw_response.list()
    assert [m.id for m in models.parse()]
    record = gateway.record(models.headers["helicone-id"])
    assert (record["pricing_status"], record["cost"]) == ("not_billable", 0.0)

    counted = anthropic_client(gateway).messages.with_raw_response.count_tokens(
        model="claude-haiku-4-5", messages=MESSAGES)
    assert counted.parse().input_tokens > 0
    record = gateway.record(counted.headers["helicone-id"])
    assert (record["pricing_status"], record["cost"]) == ("not_billable", 0.0)
