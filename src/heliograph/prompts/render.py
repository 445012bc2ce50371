"""Which prompt form a call uses, and the body it becomes; called by the proxy's prompt stage.

    body fields   `prompt_id` in a JSON body (Helicone's prompts 2025): the version from
                  `environment`, else `version_id`, else production; compiled with `inputs`
                  (typed `{{hc:…}}` checked), merged with the request; the four fields removed
    legacy tags   `Helicone-Prompt-Id` and `<helicone-prompt-input key="…">` in the body: tags
                  removed (inner text kept); the body with `{{key}}` in their place is the template
    headers       `Helicone-Prompt-Id` (+ `Helicone-Prompt-Variables`, a JSON object): a managed
                  prompt (pushed or made through the API) is compiled and merged like body fields,
                  its version from `Helicone-Prompt-Environment`, else `Helicone-Prompt-Version`;
                  otherwise the request is its own template, filled from the variables and
                  versioned whenever it is new (auto-versioning)

A request the gateway renders is sent (and cached) as rendered. A body that is not a JSON object
is left alone: the call is recorded under the header's prompt id, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .registry import PromptEntry, PromptRegistry, Version
from .template import (PromptError, auto_template, compile_body, fill, insert_partials, legacy_inputs, merge,
                       message_text, partials, type_problems)

MAX_PROMPT_ID = 256


@dataclass(slots=True)
class Rendered:
    body: bytes
    prompt_id: str
    version_id: str | None
    inputs: dict[str, Any]
    legacy: bool = False        # inline tags: Helicone also records each input as a property


# Where Helicone's body fields are honoured: chat calls (OpenAI-style and Anthropic's messages).
CHAT_PATHS = ("/chat/completions", "/messages")


def wanted(helicone: Mapping[str, str], body: bytes, path: str) -> bool:
    """Cheap test, before any parsing: does this call use a prompt? A plain chat call pays one
    substring search of its body (0.2 us for a typical body; about 0.3-0.5 ms per MB on this 2-core
    machine, like the `"stream"` test every call already pays); other calls only a dict lookup."""
    return "helicone-prompt-id" in helicone or (path.endswith(CHAT_PATHS) and b'"prompt_id"' in body)


async def render(registry: PromptRegistry, project: str, key_id: str | None, helicone: Mapping[str, str],
                 body: bytes) -> Rendered | None:
    """The call's rendered body and what its record says; PromptError (a 400) naming the problem."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    header_id = helicone.get("helicone-prompt-id")
    if not isinstance(payload, dict):
        return None
    if "prompt_id" in payload:
        return await _body_fields(registry, project, payload)
    if header_id is None:
        return None
    if not header_id.strip() or len(header_id) > MAX_PROMPT_ID:
        raise PromptError(f"Helicone-Prompt-Id must be 1 to {MAX_PROMPT_ID} characters.")
    variables = _variables(helicone.get("helicone-prompt-variables"))
    legacy = legacy_inputs(payload)
    if legacy is not None:
        clean, template, tag_inputs = legacy
        inputs = {**tag_inputs, **variables}
        version_id = await registry.auto_version(project, header_id, auto_template(template), key_id)
        return Rendered(orjson.dumps(clean), header_id, version_id, inputs, legacy=True)
    environment = helicone.get("helicone-prompt-environment")
    version = helicone.get("helicone-prompt-version")
    entry = await registry.prompt(project, header_id)
    if environment or version or (entry is not None and entry.kind == "managed"):
        chosen = await _version(registry, project, header_id, entry, version, environment)
        template = await _with_partials(registry, project, chosen.body)
        return Rendered(orjson.dumps(merge(compile_body(template, variables), payload)), header_id,
                        chosen.id, variables)
    if problems := type_problems(payload, variables):
        raise PromptError("\n".join(problems))
    version_id = await registry.auto_version(project, header_id, auto_template(payload), key_id)
    filled = fill(payload, variables) if variables else payload
    return Rendered(body if filled is payload else orjson.dumps(filled), header_id, version_id, variables)


async def _body_fields(registry: PromptRegistry, project: str, payload: dict[str, Any]) -> Rendered:
    prompt_id = payload["prompt_id"]
    if not isinstance(prompt_id, str) or not prompt_id.strip() or len(prompt_id) > MAX_PROMPT_ID:
        raise PromptError(f"prompt_id must be a string of 1 to {MAX_PROMPT_ID} characters.")
    inputs = payload.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise PromptError("inputs must be a JSON object of variable names to values.")
    version, environment = payload.get("version_id"), payload.get("environment")
    for name, value in (("version_id", version), ("environment", environment)):
        if value is not None and not isinstance(value, str):
            raise PromptError(f"{name} must be a string.")
    entry = await registry.prompt(project, prompt_id)
    chosen = await _version(registry, project, prompt_id, entry, version, environment)
    template = await _with_partials(registry, project, chosen.body)
    return Rendered(orjson.dumps(merge(compile_body(template, inputs), payload)), prompt_id, chosen.id, inputs)


async def _with_partials(registry: PromptRegistry, project: str, template: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{{hcp:id:index[:environment]}}` replaced by that message's text, before variables."""
    used = partials(template)
    if not used:
        return template
    texts = {}
    for prompt_id, index, environment in used:
        name = f"{{{{hcp:{prompt_id}:{index}:{environment}}}}}"
        entry = await registry.prompt(project, prompt_id)
        if entry is None:
            raise PromptError(f"Partial {name}: unknown prompt '{prompt_id}'.")
        version = await registry.version(project, entry.version_id(environment=environment))
        texts[(prompt_id, index, environment)] = message_text(version.body, index, name)
    filled = insert_partials(template, texts)
    assert isinstance(filled, dict)
    return filled


async def _version(registry: PromptRegistry, project: str, prompt_id: str, entry: PromptEntry | None,
                   version: str | None, environment: str | None) -> Version:
    if entry is None:
        raise PromptError(f"Unknown prompt '{prompt_id}': this project has no prompt with that id "
                          "(heliograph prompts list shows them).")
    return await registry.version(project, entry.version_id(version=version, environment=environment))


def _variables(header: str | None) -> dict[str, Any]:
    if header is None or not header.strip():
        return {}
    try:
        variables = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise PromptError(f"Helicone-Prompt-Variables is not valid JSON ({exc}); send a JSON object "
                          "such as {\"name\": \"Ada\"}.") from None
    if not isinstance(variables, dict):
        raise PromptError("Helicone-Prompt-Variables must be a JSON object of variable names to values.")
    return variables

