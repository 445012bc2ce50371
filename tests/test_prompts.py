"""Prompt management: templates at unit level, then real `heliograph serve` processes with the real
`openai` and `anthropic` SDKs against the fake provider: the three request forms, errors that never
reach the provider, streaming and caching of rendered prompts, the API, and freshness across processes."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from heliograph.prompts.template import PromptError, compile_body, diff, fill, legacy_inputs, merge, variables
from heliograph.testing import FakeUpstream

from .conftest import Gateway, run_cli, start_gateway
from .test_store_contract import T0, make_row

TEMPLATE = {"model": "gpt-4o-mini", "temperature": 0.3, "messages": [
    {"role": "system", "content": "You help {{hc:customer:string}} (age {{hc:age:number}}, vip {{hc:vip:boolean}})."},
    {"role": "user", "content": "{{hc:question:string}}"}]}


# -- templates -----------------------------------------------------------------------------------

def test_variables_are_declared_in_order_with_their_types() -> None:
    assert variables(TEMPLATE) == [{"name": "customer", "type": "string"}, {"name": "age", "type": "number"},
                                   {"name": "vip", "type": "boolean"}, {"name": "question", "type": "string"}]
    assert variables({"m": "{{ hc : a : number }} and {{seed_var}}"}) == [
        {"name": "a", "type": "number"}, {"name": "seed_var", "type": "string"}]


def test_compile_fills_text_and_injects_whole_tag_values_raw() -> None:
    body = compile_body({"messages": [{"content": "Hi {{hc:name:string}}"}], "response_format": "{{hc:schema:object}}",
                         "n": "{{hc:count:number}}"},
                        {"name": "Ada", "schema": {"type": "json_object"}, "count": 2})
    assert body == {"messages": [{"content": "Hi Ada"}], "response_format": {"type": "json_object"}, "n": 2}


def test_a_missing_or_falsy_input_leaves_the_tag_in_text() -> None:
    text = "A {{hc:a:string}} B {{hc:b:string}} C {{c}}"
    assert fill(text, {"b": ""}) == text
    assert fill(text, {"a": "x", "c": "z"}) == "A x B {{hc:b:string}} C z"


def test_wrong_types_are_listed_one_line_each_in_helicones_words() -> None:
    with pytest.raises(PromptError) as caught:
        compile_body(TEMPLATE, {"age": "abc", "vip": "perhaps", "customer": 5})
    assert str(caught.value).splitlines() == ["Variable 'age' is 'number' but got 'abc'",
                                              "Variable 'vip' is 'boolean' but got 'perhaps'"]
    assert compile_body(TEMPLATE, {"age": "42", "vip": "YES"})["messages"][0]["content"].endswith("(age 42, vip YES).")


def test_merge_puts_the_templates_messages_first_and_lets_the_request_override() -> None:
    merged = merge({"model": "a", "temperature": 0.3, "messages": [{"role": "system", "content": "s"}], "tools": [1]},
                   {"temperature": 0.9, "messages": [{"role": "user", "content": "u"}], "tools": [2],
                    "prompt_id": "x", "inputs": {}, "environment": "e", "version_id": "v"})
    assert merged == {"model": "a", "temperature": 0.9, "tools": [1, 2],
                      "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}


def test_legacy_tags_are_removed_and_become_variables() -> None:
    body = {"messages": [{"role": "user", "content": 'Write about <helicone-prompt-input key="topic">owls'
                                                      '</helicone-prompt-input> in <helicone-prompt-static>English'
                                                      '</helicone-prompt-static>.'}]}
    found = legacy_inputs(body)
    assert found is not None
    clean, template, inputs = found
    assert clean["messages"][0]["content"] == "Write about owls in English."
    assert template["messages"][0]["content"] == "Write about {{topic}} in English."
    assert inputs == {"topic": "owls"}
    assert legacy_inputs({"messages": [{"content": "plain"}]}) is None


def test_diff_shows_only_what_changed() -> None:
    text = diff({"model": "a", "temperature": 0.1}, {"model": "a", "temperature": 0.5}, "v1", "v2")
    changed = [line for line in text.splitlines()[2:] if line[:1] in "+-"]
    assert changed == ['-  "temperature": 0.1', '+  "temperature": 0.5']


# -- through the gateway -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # A provider key held by the gateway: used only by calls without a credential (the playground's Run).
    gateway = start_gateway(tmp_path_factory.mktemp("prompts"), fake.url,
                            extra_env={"HELIOGRAPH_PROVIDER_KEY_OPENAI": "sk-held-by-gateway"})
    yield gateway
    gateway.stop()


def api(gateway: Gateway, path: str, body: Any = None, method: str = "POST", key: str | None = None) -> httpx.Response:
    return httpx.request(method, gateway.url + "/api/v1/prompt-2025" + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {key or gateway.key}"})


_open: list[openai.OpenAI | anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """SDK clients hold connection pools: closed after each test (an unclosed socket is a warning, so an error)."""
    yield
    while _open:
        _open.pop().close()


def client(gateway: Gateway, **headers: str) -> openai.OpenAI:
    made = openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key="sk-provider", max_retries=0,
                         default_headers={**gateway.auth, **headers})
    _open.append(made)
    return made


def make_prompt(gateway: Gateway, body: dict[str, Any] | None = None, **extra: Any) -> tuple[str, str]:
    made = api(gateway, "", {"name": "Support", "tags": ["support"], "promptBody": body or TEMPLATE, **extra})
    assert made.status_code == 201, made.text
    return made.json()["data"]["id"], made.json()["data"]["versionId"]


def new_version(gateway: Gateway, prompt_id: str, body: dict[str, Any], **extra: Any) -> str:
    made = api(gateway, "/update", {"promptId": prompt_id, "promptBody": body, "commitMessage": "next", **extra})
    assert made.status_code == 201, made.text
    return str(made.json()["data"]["id"])


INPUTS = {"customer": "Ada", "age": 36, "vip": True, "question": "Where is order 7?"}


def test_body_fields_render_the_production_version_and_are_recorded(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id, version_id = make_prompt(gw)
    raw = client(gw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "And quickly please."}], temperature=0.9,
        extra_body={"prompt_id": prompt_id, "inputs": INPUTS})
    assert raw.http_response.status_code == 200
    sent = fresh_fake.requests[-1].json
    assert not {"prompt_id", "inputs", "version_id", "environment"} & set(sent)
    assert sent["temperature"] == 0.9       # the request overrides the template
    assert [m["content"] for m in sent["messages"]] == [
        "You help Ada (age 36, vip true).", "Where is order 7?", "And quickly please."]
    record = gw.record(raw.headers["helicone-id"])
    assert (record["prompt_id"], record["prompt_version"], record["prompt_inputs"]) == (prompt_id, version_id, INPUTS)
    assert record["request_body"]["messages"][0]["content"] == "You help Ada (age 36, vip true)."
    listed = httpx.post(gw.url + "/api/v1/request/query", headers={"Authorization": f"Bearer {gw.key}"},
                        json={"filter": {"request_response_rmt": {"prompt_version": {"equals": version_id}}}})
    assert [r["request_id"] for r in listed.json()["data"]] == [raw.headers["helicone-id"]]


def test_model_may_come_from_the_prompt_and_environment_wins_over_version(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id, first = make_prompt(gw)
    second = new_version(gw, prompt_id, {**TEMPLATE, "model": "gpt-4o"}, environment="staging")
    r = httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
                   json={"prompt_id": prompt_id, "environment": "staging", "version_id": first, "inputs": INPUTS})
    assert r.status_code == 200, r.text
    assert fresh_fake.requests[-1].json["model"] == "gpt-4o"
    assert gw.record(r.headers["helicone-id"])["prompt_version"] == second
    r = httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
                   json={"prompt_id": prompt_id, "version_id": "1.0", "inputs": INPUTS})
    assert r.status_code == 200 and fresh_fake.requests[-1].json["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("body, expected", [
    ({"inputs": {"age": "abc", "vip": "maybe"}},
     "Variable 'age' is 'number' but got 'abc'\nVariable 'vip' is 'boolean' but got 'maybe'"),
    ({"environment": "nowhere"}, "has no environment 'nowhere'"),
    ({"version_id": "9.9"}, "has no version '9.9'"),
    ({"inputs": ["not", "an", "object"]}, "inputs must be a JSON object"),
])
def test_bad_body_fields_are_a_400_in_openais_shape_and_never_reach_the_provider(
        gw: Gateway, fresh_fake: FakeUpstream, body: dict[str, Any], expected: str) -> None:
    prompt_id, _ = make_prompt(gw)
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).chat.completions.create(model="gpt-4o-mini", messages=[], extra_body={"prompt_id": prompt_id, **body})
    assert expected in caught.value.body["message"]  # type: ignore[index]
    assert caught.value.response.json()["error"]["type"] == "invalid_request_error"
    assert fresh_fake.requests == []


def test_an_unknown_prompt_and_bad_variables_json_are_400s(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError, match="Unknown prompt 'no-such-prompt'"):
        client(gw).chat.completions.create(model="gpt-4o-mini", messages=[], extra_body={"prompt_id": "no-such-prompt"})
    with pytest.raises(openai.BadRequestError, match="Helicone-Prompt-Variables is not valid JSON"):
        client(gw, **{"Helicone-Prompt-Id": "x1", "Helicone-Prompt-Variables": "{name: Ada"}).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "{{name}}"}])
    with pytest.raises(openai.BadRequestError, match="Unknown prompt 'never-made'"):
        client(gw, **{"Helicone-Prompt-Id": "never-made", "Helicone-Prompt-Environment": "production"}
               ).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert fresh_fake.requests == []


def test_anthropic_routes_answer_bad_prompts_in_anthropics_shape(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id, _ = make_prompt(gw, {"model": "claude-3-5-haiku-latest", "max_tokens": 50,
                                    "messages": [{"role": "user", "content": "Count to {{hc:n:number}}"}]})
    claude = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="sk-ant", max_retries=0,
                                 default_headers={**gw.auth, "Helicone-Prompt-Id": prompt_id})
    _open.append(claude)
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=50, messages=[],
                               extra_headers={"Helicone-Prompt-Variables": json.dumps({"n": "ten"})})
    assert caught.value.response.json()["type"] == "error"
    assert "Variable 'n' is 'number' but got 'ten'" in caught.value.response.json()["error"]["message"]
    assert fresh_fake.requests == []
    answer = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=50, messages=[],
                                    extra_headers={"Helicone-Prompt-Variables": json.dumps({"n": 3})})
    assert answer.content and fresh_fake.requests[-1].json["messages"] == [{"role": "user", "content": "Count to 3"}]


def test_the_header_form_auto_versions_the_requests_own_template(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id = "auto-" + uuid.uuid4().hex[:6]
    ids, versions = [], []
    for name, template in (("Ada", "Hello {{name}}"), ("Bob", "Hello {{name}}"), ("Cy", "Hi there {{name}}")):
        raw = client(gw, **{"Helicone-Prompt-Id": prompt_id, "Helicone-Prompt-Variables": json.dumps({"name": name})}
                     ).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": template}])
        assert fresh_fake.requests[-1].json["messages"][0]["content"] == template.replace("{{name}}", name)
        ids.append(raw.headers["helicone-id"])
    for request_id in ids:
        versions.append(gw.record(request_id)["prompt_version"])
    assert versions[0] == versions[1] != versions[2] and None not in versions
    listed = api(gw, "/query/versions", {"promptId": prompt_id}).json()["data"]
    assert [(v["id"], v["version"]) for v in listed] == [(versions[2], "1.1"), (versions[0], "1.0")]
    assert listed[1]["prompt_body"]["messages"][0]["content"] == "Hello {{name}}"
    assert listed[1]["environments"] == ["production"]
    assert gw.record(ids[0])["prompt_inputs"] == {"name": "Ada"}


def test_legacy_tags_with_the_prompt_id_header(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id = "legacy-" + uuid.uuid4().hex[:6]
    content = 'Tell me about <helicone-prompt-input key="animal">otters</helicone-prompt-input>.'
    raw = client(gw, **{"Helicone-Prompt-Id": prompt_id}).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}])
    assert fresh_fake.requests[-1].json["messages"][0]["content"] == "Tell me about otters."
    record = gw.record(raw.headers["helicone-id"])
    assert record["prompt_id"] == prompt_id and record["prompt_inputs"] == {"animal": "otters"}
    assert record["properties"]["helicone-prompt-input-animal"] == "otters"     # as Helicone records them
    version = api(gw, "/query/version", {"promptVersionId": record["prompt_version"]}).json()["data"]
    assert version["prompt_body"]["messages"][0]["content"] == "Tell me about {{animal}}."


def test_rendered_prompts_stream_and_are_cached_as_rendered(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id, version_id = make_prompt(gw)
    chunks = list(client(gw).chat.completions.create(model="gpt-4o-mini", messages=[], stream=True,
                                                    extra_body={"prompt_id": prompt_id, "inputs": INPUTS}))
    assert chunks and "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert fresh_fake.requests[-1].json["messages"][1]["content"] == "Where is order 7?"
    cached = client(gw, **{"Helicone-Cache-Enabled": "true"})
    first = cached.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[], extra_body={"prompt_id": prompt_id, "inputs": INPUTS})
    calls = len(fresh_fake.requests)
    second = cached.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[], extra_body={"prompt_id": prompt_id, "inputs": INPUTS})
    other = cached.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[], extra_body={"prompt_id": prompt_id, "inputs": {**INPUTS, "customer": "Bo"}})
    assert (first.headers["helicone-cache"], second.headers["helicone-cache"], other.headers["helicone-cache"]) == (
        "MISS", "HIT", "MISS")
    assert len(fresh_fake.requests) == calls + 1
    assert gw.record(second.headers["helicone-id"])["prompt_version"] == version_id


def test_the_render_endpoint_and_the_gateway_send_the_same_body(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id, version_id = make_prompt(gw)
    rendered = api(gw, "/render", {"promptId": prompt_id, "inputs": INPUTS})
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["data"]["versionId"] == version_id
    httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
               json={"prompt_id": prompt_id, "inputs": INPUTS})
    assert fresh_fake.requests[-1].json == rendered.json()["data"]["body"]
    bad = api(gw, "/render", {"promptId": prompt_id, "inputs": {"age": "old"}})
    assert bad.status_code == 400 and bad.json()["error"] == "Variable 'age' is 'number' but got 'old'"
    assert fresh_fake.requests[-1].json == rendered.json()["data"]["body"]


def test_the_prompt_2025_paths(gw: Gateway) -> None:
    prompt_id, first = make_prompt(gw, id="orders-" + uuid.uuid4().hex[:4], description="order help")
    second = new_version(gw, prompt_id, {**TEMPLATE, "temperature": 0.7}, promptVersionId=first)
    major = api(gw, "/update", {"promptId": prompt_id, "promptBody": TEMPLATE, "newMajorVersion": True,
                                "commitMessage": "rewrite"}).json()["data"]
    assert major["version"] == "2.0"
    assert api(gw, "/query/production-version", {"promptId": prompt_id}).json()["data"]["id"] == first
    moved = api(gw, "/update/environment", {"promptId": prompt_id, "promptVersionId": second, "environment": "production"})
    assert moved.status_code == 200 and moved.json()["data"]["previous_version_id"] == first
    assert api(gw, "/query/environment-version", {"promptId": prompt_id, "environment": "production"}
               ).json()["data"]["version"] == "1.1"
    back = api(gw, "/update/environment", {"promptId": prompt_id, "promptVersionId": "1.0", "environment": "production"})
    assert back.json()["data"]["version_id"] == first       # a rollback, by number
    shown = api(gw, f"/id/{prompt_id}", method="GET").json()["data"]
    assert shown["environments"] == {"production": first} and shown["versions_count"] == 3
    assert [(m["name"], m["to_version_id"]) for m in shown["environment_moves"]][:2] == [
        ("production", first), ("production", second)]
    found = api(gw, "/query", {"search": prompt_id[:7]}).json()["data"]
    assert [p["id"] for p in found] == [prompt_id]
    assert api(gw, "/query/versions", {"promptId": prompt_id, "majorVersion": 1}).json()["data"][0]["id"] == second
    changed = api(gw, "/diff", {"promptId": prompt_id, "from": "1.0", "to": second}).json()["data"]
    assert '-  "temperature": 0.3' in changed["diff"] and '+  "temperature": 0.7' in changed["diff"]
    assert api(gw, f"/{prompt_id}/{second}", method="DELETE").status_code == 200
    assert api(gw, "/query/version", {"promptVersionId": second}).status_code == 404
    assert api(gw, f"/{prompt_id}", method="DELETE").status_code == 200
    assert api(gw, f"/id/{prompt_id}", method="GET").status_code == 404
    assert api(gw, "", {"name": "x", "promptBody": "nope"}).json()["error"].startswith("promptBody must be")


def test_metrics_compare_versions_side_by_side(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id, first = make_prompt(gw)
    second = new_version(gw, prompt_id, {**TEMPLATE, "model": "gpt-4o"})
    ids = []
    for version, count in ((first, 2), (second, 1)):
        for _ in range(count):
            r = httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
                           json={"prompt_id": prompt_id, "version_id": version, "inputs": INPUTS})
            ids.append(r.headers["helicone-id"])
    for request_id in ids:
        gw.record(request_id)
    rows = {row["version_id"]: row for row in api(gw, "/query/metrics", {"promptId": prompt_id}).json()["data"]}
    assert (rows[first]["requests"], rows[second]["requests"]) == (2, 1)
    assert rows[second]["cost"] > 0 and rows[first]["avg_latency_ms"] > 0 and rows[first]["error_rate"] == 0
    # The same comparison from the analytics API, with any filter: grouped by prompt version.
    grouped = httpx.post(gw.url + "/api/v1/analytics/query", headers={"Authorization": f"Bearer {gw.key}"}, json={
        "filter": {"request_response_rmt": {"prompt_id": {"equals": prompt_id}}}, "bucket": None,
        "groupBy": "prompt_version"})
    assert grouped.status_code == 200, grouped.text
    groups = {g["group"]: g for g in grouped.json()["data"]["groups"]}
    assert (groups[first]["requests"], groups[second]["requests"]) == (2, 1)


def test_a_version_pushed_elsewhere_is_used_within_seconds(gw: Gateway, fresh_fake: FakeUpstream, tmp_path: Path) -> None:
    prompt_id, first = make_prompt(gw)
    call = {"prompt_id": prompt_id, "environment": "production", "inputs": INPUTS}
    assert httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
                      json=call).status_code == 200
    from heliograph.storage import open_store   # another process's write: straight to the store
    store = open_store(gw.db_url)
    try:
        second = store.save_version("default", prompt_id, {**TEMPLATE, "model": "gpt-4.1-mini"}, [], "h2",
                                    environment="production")
    finally:
        store.close()
    assert second is not None
    deadline = time.monotonic() + 5
    while fresh_fake.requests[-1].json["model"] != "gpt-4.1-mini":
        assert time.monotonic() < deadline, "the new production version was not used within 5 s"
        time.sleep(0.2)
        httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"}, json=call)


def test_the_cli_pushes_files_from_a_repository_and_the_gateway_follows(
        gw: Gateway, fresh_fake: FakeUpstream, tmp_path: Path) -> None:
    prompt_id = "cli-" + uuid.uuid4().hex[:6]
    source = tmp_path / "support.yaml"
    source.write_text(f"id: {prompt_id}\nname: Support\ntags: [support]\nbody:\n  model: gpt-4o-mini\n"
                      "  messages:\n    - role: system\n      content: 'Help {{hc:customer:string}} with order "
                      "{{hc:order:number}}.'\n")
    first = run_cli("prompts", "push", str(source), env=gw.env)
    assert first.returncode == 0 and "Created version 1.0" in first.stdout, first.stderr
    again = run_cli("prompts", "push", str(source), env=gw.env)
    assert again.returncode == 0 and "no version created" in again.stdout
    as_json = tmp_path / "support.json"
    as_json.write_text(json.dumps({"id": prompt_id, "environment": "staging", "body": {
        "model": "gpt-4o", "messages": [{"role": "system", "content": "Help {{hc:customer:string}} kindly."}]}}))
    assert "Created version 1.1" in run_cli("prompts", "push", str(as_json), env=gw.env).stdout
    listed = json.loads(run_cli("prompts", "list", "--json", env=gw.env).stdout)
    assert next(p for p in listed if p["id"] == prompt_id)["versions_count"] == 2
    shown = run_cli("prompts", "show", prompt_id, env=gw.env).stdout
    assert "[staging]" in shown and "[production]" in shown
    changed = run_cli("prompts", "diff", prompt_id, "1.0", "1.1", env=gw.env).stdout
    assert '-  "model": "gpt-4o-mini"' in changed and '+  "model": "gpt-4o"' in changed
    rendered = run_cli("prompts", "render", prompt_id, "--version", "1.0", "--input", "customer=Ada",
                       "--input", "order=42", env=gw.env)
    assert json.loads(rendered.stdout)["messages"][0]["content"] == "Help Ada with order 42."
    wrong = run_cli("prompts", "render", prompt_id, "--version", "1.0", "--input", "order=soon", env=gw.env)
    assert wrong.returncode != 0 and "Variable 'order' is 'number' but got 'soon'" in wrong.stderr
    call = {"prompt_id": prompt_id, "inputs": {"customer": "Ada", "order": 42}}
    r = httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"}, json=call)
    assert r.status_code == 200 and fresh_fake.requests[-1].json["model"] == "gpt-4o-mini"
    promoted = run_cli("prompts", "promote", prompt_id, "1.1", "production", env=gw.env)
    assert promoted.returncode == 0 and "now version 1.1" in promoted.stdout
    deadline = time.monotonic() + 5
    while fresh_fake.requests[-1].json["model"] != "gpt-4o":
        assert time.monotonic() < deadline, "the promoted version was not used within 5 s"
        time.sleep(0.2)
        httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"}, json=call)
    unknown = run_cli("prompts", "promote", prompt_id, "7.0", "production", env=gw.env)
    assert unknown.returncode != 0 and "has no version '7.0'" in unknown.stderr


def test_two_processes_on_one_postgres_auto_version_each_template_once(
        fake: FakeUpstream, fresh_postgres: Any, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor
    url = fresh_postgres()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_gateway(tmp_path / "a", fake.url, extra_env={"HELIOGRAPH_DB_URL": url})
    second = start_gateway(tmp_path / "b", fake.url, extra_env={"HELIOGRAPH_DB_URL": url}, reuse_key=first.key)
    try:
        prompt_id = "race-" + uuid.uuid4().hex[:6]
        templates = [f"Summarise {{{{text}}}} in {n} words" for n in range(6)]
        for gateway in (first, second):     # connections and keys warm, so the calls below start together
            assert httpx.post(gateway.url + "/openai/v1/chat/completions", headers={**gateway.auth,
                              "Authorization": "Bearer k"}, json={"model": "m", "messages": [{"role": "user",
                              "content": "warm"}]}).status_code == 200
        rounds = [[(n, (first, second)[n % 2], template) for n in range(4)] for template in templates]

        def call(job: tuple[int, Gateway, str], barrier: Any) -> str:
            n, gateway, template = job
            with httpx.Client(timeout=30) as http:
                barrier.wait()
                r = http.post(gateway.url + "/openai/v1/chat/completions",
                              headers={**gateway.auth, "Authorization": "Bearer k", "Helicone-Prompt-Id": prompt_id,
                                       "Helicone-Prompt-Variables": json.dumps({"text": f"doc {n}"})},
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": template}]})
            assert r.status_code == 200, r.text
            return r.headers["helicone-id"]

        import threading
        ids = []
        with ThreadPoolExecutor(4) as pool:
            for jobs in rounds:     # each template sent 4 times at once, 2 through each process
                barrier = threading.Barrier(len(jobs))
                ids += list(pool.map(call, jobs, [barrier] * len(jobs)))
        versions = api(first, "/query/versions", {"promptId": prompt_id}).json()["data"]
        assert sorted(v["prompt_body"]["messages"][0]["content"] for v in versions) == sorted(templates)
        assert sorted(v["version"] for v in versions) == [f"1.{n}" for n in range(6)]
        recorded = [first.record(i)["prompt_version"] for i in ids]
        assert None not in recorded and set(recorded) == {v["id"] for v in versions}
    finally:
        second.stop()
        first.stop()


def test_dashboard_lists_prompts_compares_versions_and_promotes_with_csrf(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    from .test_dashboard_pages import csrf_of, login, new_key
    prompt_id, first = make_prompt(gw, name="Dashboard <b>prompt</b>")
    second = new_version(gw, prompt_id, {**TEMPLATE, "model": "gpt-4o"}, commitMessage="bigger model")
    ids = []
    for version, count in ((first, 2), (second, 1)):
        for _ in range(count):
            r = httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
                           json={"prompt_id": prompt_id, "version_id": version, "inputs": INPUTS})
            ids.append(r.headers["helicone-id"])
    for request_id in ids:
        gw.record(request_id)
    admin = login(gw, gw.key)
    try:
        listed = admin.get("/prompts")
        assert listed.status_code == 200 and f'data-prompt-id="{prompt_id}"' in listed.text
        assert "Dashboard &lt;b&gt;prompt&lt;/b&gt;" in listed.text and "production 1.0" in listed.text
        page = admin.get(f"/prompts/{prompt_id}")
        assert page.status_code == 200
        assert f'<tr data-version-id="{second}"' in page.text and f'<tr data-version-id="{first}"' in page.text
        assert f'/requests?prompt={prompt_id}&version={first}" data-requests-link>2</a>' in page.text
        assert f'/requests?prompt={prompt_id}&version={second}" data-requests-link>1</a>' in page.text
        assert "<ins>+  &#34;model&#34;: &#34;gpt-4o&#34;,</ins>" in page.text or "<ins>+  &#34;model&#34;: &#34;gpt-4o&#34;</ins>" in page.text
        played = admin.get(f"/prompts/{prompt_id}", params={"version": first, "render": "1", "in.customer": "Ada",
                                                           "in.age": "36", "in.vip": "true", "in.question": "Hi?"})
        assert "You help Ada (age 36, vip true)." in played.text
        bad = admin.get(f"/prompts/{prompt_id}", params={"version": first, "render": "1", "in.age": "old"})
        assert "Variable &#39;age&#39; is &#39;number&#39; but got &#39;old&#39;" in bad.text
        assert 'data-run' in played.text
        calls = len(fresh_fake.requests)
        ran = admin.post(f"/prompts/{prompt_id}/run", data={
            "csrf": csrf_of(page.text), "version": first, "in.customer": "Ada", "in.age": "36", "in.vip": "true",
            "in.question": "Hi?"})
        assert ran.status_code == 200 and "data-run-answer" in ran.text
        assert len(fresh_fake.requests) == calls + 1
        upstream = fresh_fake.requests[-1]
        assert upstream.headers["authorization"] == "Bearer sk-held-by-gateway"
        assert upstream.json["messages"][0]["content"] == "You help Ada (age 36, vip true)."
        run_id = re.search(r'href="/requests/([^"]+)" data-run-request', ran.text)
        assert run_id is not None
        ran_record = gw.record(run_id.group(1))
        assert ran_record["prompt_version"] == first and ran_record["key_id"]      # recorded as the logged-in key
        assert ran_record["prompt_inputs"] == {"customer": "Ada", "age": 36, "vip": True, "question": "Hi?"}
        assert admin.post(f"/prompts/{prompt_id}/run", data={"version": first}).status_code == 403   # no CSRF
        ids.append(run_id.group(1))
        filtered = admin.get("/requests", params={"prompt": prompt_id, "version": second})
        assert filtered.text.count("data-request-id=") == 1 and ids[2] in filtered.text
        detail = admin.get(f"/requests/{ids[0]}")
        assert f'href="/prompts/{prompt_id}?version={first}" data-prompt-link' in detail.text
        refused = admin.post(f"/prompts/{prompt_id}/environment", data={"environment": "production", "version": second})
        assert refused.status_code == 403
        moved = admin.post(f"/prompts/{prompt_id}/environment", follow_redirects=False,
                           data={"environment": "production", "version": second, "csrf": csrf_of(page.text)})
        assert moved.status_code == 303
        assert api(gw, "/query/production-version", {"promptId": prompt_id}).json()["data"]["id"] == second
    finally:
        admin.close()
    reader = login(gw, new_key(gw, "read"))
    try:
        page = reader.get(f"/prompts/{prompt_id}")
        assert page.status_code == 200 and "data-promote" not in page.text
        assert reader.post(f"/prompts/{prompt_id}/environment",
                           data={"environment": "production", "version": first, "csrf": csrf_of(page.text)}
                           ).status_code == 403
    finally:
        reader.close()
    assert api(gw, "/query/production-version", {"promptId": prompt_id}).json()["data"]["id"] == second


def test_the_header_form_renders_a_registry_prompt_by_environment_or_version(
        gw: Gateway, fresh_fake: FakeUpstream) -> None:
    prompt_id, first = make_prompt(gw)
    second = new_version(gw, prompt_id, {**TEMPLATE, "model": "gpt-4o"}, environment="staging")
    variables = json.dumps(INPUTS)
    for headers, version in (({}, first), ({"Helicone-Prompt-Environment": "staging"}, second),
                             ({"Helicone-Prompt-Version": second}, second), ({"Helicone-Prompt-Version": "1.0"}, first),
                             ({"Helicone-Prompt-Environment": "staging", "Helicone-Prompt-Version": "1.0"}, second)):
        raw = client(gw, **{"Helicone-Prompt-Id": prompt_id, "Helicone-Prompt-Variables": variables, **headers}
                     ).chat.completions.with_raw_response.create(
            model="ignored-by-nothing", messages=[{"role": "user", "content": "Thanks!"}])
        sent = fresh_fake.requests[-1].json
        # The request's own model overrides the template's; the version's messages come first.
        assert sent["model"] == "ignored-by-nothing" and sent["temperature"] == 0.3
        assert [m["content"] for m in sent["messages"]][1:] == ["Where is order 7?", "Thanks!"]
        assert gw.record(raw.headers["helicone-id"])["prompt_version"] == version, headers
    with pytest.raises(openai.BadRequestError, match="has no version '4.2'"):
        client(gw, **{"Helicone-Prompt-Id": prompt_id, "Helicone-Prompt-Version": "4.2"}).chat.completions.create(
            model="gpt-4o-mini", messages=[])


def test_a_person_compares_versions_renders_and_promotes_in_a_browser(gw: Gateway, fresh_fake: FakeUpstream,
                                                                       tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from .test_dashboard_browser import SHOTS, chromium_path
    executable = chromium_path()
    prompt_id, first = make_prompt(gw, name="Browser prompt")
    second = new_version(gw, prompt_id, {**TEMPLATE, "temperature": 0.9}, commitMessage="warmer")
    for version in (first, second, second):
        httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
                   json={"prompt_id": prompt_id, "version_id": version, "inputs": INPUTS})
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(gw.url + "/login")
            page.fill("input[name=key]", gw.key)
            page.click("button[type=submit]")
            page.goto(gw.url + "/prompts")
            page.locator(f'tr[data-prompt-id="{prompt_id}"] a').first.click()
            expect(page).to_have_url(f"{gw.url}/prompts/{prompt_id}")
            expect(page.locator(f'tr[data-version-id="{second}"] [data-requests-link]')).to_have_text("2")
            expect(page.locator("pre[data-diff] ins")).to_contain_text('"temperature": 0.9')
            assert page.locator("pre[data-diff]").inner_text().count("\n") >= 6      # one line per diff line
            page.fill("input[name='in.customer']", "Grace")
            page.fill("input[name='in.age']", "85")
            page.click("form[data-playground] button[type=submit]")
            expect(page.locator("pre[data-rendered-body]")).to_contain_text("You help Grace (age 85")
            page.screenshot(path=str(SHOTS / "11-prompt.png"), full_page=True)
            page.select_option("#e-version", second)
            page.click("form[data-promote] button[type=submit]")
            expect(page.locator('tr[data-environment="production"]')).to_contain_text("1.1")
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            browser.close()
    assert api(gw, "/query/production-version", {"promptId": prompt_id}).json()["data"]["id"] == second


# -- the store, both backends ---------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from heliograph.storage import open_store
    url = (f"sqlite:///{tmp_path / 'prompts.db'}" if request.param == "sqlite"
           else request.getfixturevalue("fresh_postgres")())
    opened = open_store(url)
    opened.migrate()
    yield opened
    opened.close()


def save(s: Any, project: str, prompt_id: str, body: dict[str, Any], **options: Any) -> tuple[dict[str, Any], bool]:
    from heliograph.prompts.template import body_hash
    saved = s.save_version(project, prompt_id, body, variables(body), body_hash(body), **options)
    assert saved is not None
    return saved  # type: ignore[no-any-return]


def test_the_store_keeps_versions_environments_and_their_moves_per_project(book: Any) -> None:
    assert book.save_version("default", "p", TEMPLATE, [], "h") is None        # no such prompt
    first, made = save(book, "default", "p", TEMPLATE, create={"name": "P", "tags": ["t"]})
    assert made and (first["major"], first["minor"]) == (1, 0)
    stamp = book.prompt_stamps([("default", "p")])[("default", "p")]
    assert save(book, "default", "p", TEMPLATE, reuse="latest") == (first, False)     # unchanged: no version
    assert book.prompt_stamps([("default", "p")])[("default", "p")] == stamp
    second, _ = save(book, "default", "p", {**TEMPLATE, "n": 2}, environment="staging")
    third, _ = save(book, "default", "p", TEMPLATE, new_major=True)
    assert [(v["major"], v["minor"]) for v in (second, third)] == [(1, 1), (2, 0)]
    assert save(book, "default", "p", TEMPLATE, reuse="any")[0]["id"] == first["id"]   # seen before: that one
    assert book.get_prompt("default", "p")["environments"] == {"production": first["id"], "staging": second["id"]}
    assert book.set_environment("default", "p", "production", third["id"], key_id="key_1") == first["id"]
    assert book.set_environment("default", "p", "production", "pv_nope") is False
    assert [(m["name"], m["from_version_id"], m["to_version_id"]) for m in book.environment_moves("default", "p")][0] == (
        "production", first["id"], third["id"])
    assert book.prompt_stamps([("default", "p")])[("default", "p")] > stamp
    assert book.delete_version("default", "p", second["id"])
    assert book.get_prompt("default", "p")["environments"] == {"production": third["id"]}
    # another project sees nothing, and may use the same prompt id for its own
    assert book.get_prompt("other", "p") is None and book.get_version("other", first["id"]) is None
    assert book.list_prompts("other") == [] and not book.delete_prompt("other", "p")
    assert not book.delete_version("other", "p", first["id"])
    theirs, _ = save(book, "other", "p", TEMPLATE, create={"name": "Theirs"})
    assert theirs["id"] != first["id"] and book.get_prompt("default", "p")["name"] == "P"
    assert book.delete_prompt("default", "p") and book.get_prompt("default", "p") is None
    assert book.get_prompt("other", "p") is not None


def test_metrics_by_version_and_inputs_leave_with_the_bodies(book: Any) -> None:
    day = 86_400_000
    rows = [make_row(f"r{n}", created_at=T0 + n, prompt_id="p", prompt_version="pv_a" if n < 3 else "pv_b",
                     status=500 if n == 4 else 200, latency_ms=100.0 * (n + 1), cost=0.001,
                     prompt_inputs=json.dumps({"n": n})) for n in range(5)]
    book.insert_requests(rows)
    book.set_scores("r0", {"accuracy": 80}, project="default")
    book.set_scores("r1", {"accuracy": 60}, project="default")
    found = {m["version_id"]: m for m in book.prompt_version_metrics("default", "p", start=T0 - 1, end=T0 + day)}
    assert (found["pv_a"]["requests"], found["pv_b"]["requests"]) == (3, 2)
    assert found["pv_b"]["errors"] == 1 and found["pv_b"]["error_rate"] == 50.0
    assert found["pv_a"]["avg_latency_ms"] == 200.0 and found["pv_a"]["p50_latency_ms"] == 200.0
    assert found["pv_a"]["scores"] == {"accuracy": 70.0} and found["pv_b"]["scores"] == {}
    assert book.prompt_version_metrics("other", "p", start=0) == []
    assert book.prompt_usage("default", ["p", "q"], start=0) == {"p": {"requests": 5, "cost": pytest.approx(0.005), "unpriced": 0}}
    assert book.get_request("r0", project="default")["prompt_inputs"] == '{"n": 0}'
    book.prune(body_days=1, metrics_days=0, now_ms=T0 + 2 * day)
    assert book.get_request("r0", project="default")["prompt_inputs"] is None
    assert book.prompt_version_metrics("default", "p", start=0)[0]["requests"] in (2, 3)    # metrics stay


def test_partials_insert_another_prompts_message_before_variables(gw: Gateway, fresh_fake: FakeUpstream) -> None:
    style, _ = make_prompt(gw, {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Always answer in {{hc:language:string}}."}]})
    staged = new_version(gw, style, {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Answer in {{hc:language:string}}, politely."}]}, environment="staging")
    assert staged
    uses, _ = make_prompt(gw, {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": f"{{{{hcp:{style}:0}}}} Be brief. ({{{{hcp:{style}:0:staging}}}})"}]})
    call = {"prompt_id": uses, "inputs": {"language": "French"},
            "messages": [{"role": "user", "content": "Bonjour"}]}
    r = httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"}, json=call)
    assert r.status_code == 200, r.text
    sent = fresh_fake.requests[-1].json
    assert sent["messages"][0]["content"] == "Always answer in French. Be brief. (Answer in French, politely.)"
    rendered = api(gw, "/render", {"promptId": uses, "inputs": {"language": "French"},
                                   "request": {"messages": [{"role": "user", "content": "Bonjour"}]}})
    assert rendered.json()["data"]["body"] == sent
    broken, _ = make_prompt(gw, {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "{{hcp:nope00:0}}"}]})
    calls = len(fresh_fake.requests)
    bad = httpx.post(gw.url + "/openai/v1/chat/completions", headers={**gw.auth, "Authorization": "Bearer k"},
                     json={"prompt_id": broken})
    assert bad.status_code == 400 and "Partial {{hcp:nope00:0:production}}" in bad.json()["error"]["message"]
    assert len(fresh_fake.requests) == calls
    assert api(gw, "/render", {"promptId": broken}).status_code == 400
