"""A stored request and response body → the conversation the request detail page shows.

One reader per API family, picked from the bodies' shape (the record's path breaks the ties
between embeddings and the Responses API, whose requests both carry `input`):

    OpenAI chat completions   messages[] → choices[].message
    OpenAI completions        prompt → choices[].text
    OpenAI Responses API      instructions + input (text or items) → output[] items
    OpenAI embeddings         input → a summary of the vectors
    Anthropic messages        system + messages[] (content blocks) → content[] blocks

Chat-style content blocks of both providers go through one reader (`_blocks`): the same request
can mix them when a client translates, and an unknown block type becomes a placeholder, never an
error. Streamed answers are stored already assembled in the non-stream shape, so nothing here
parses SSE. A body of none of these shapes gives None: the page then shows the raw JSON only.

Everything returned is plain text; escaping is the template's job (autoescape).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

ROLES = ("system", "user", "assistant", "tool")
_ROLE_ALIASES = {"developer": "system", "function": "tool", "model": "assistant"}
MAX_URL_SHOWN = 120


@dataclass(slots=True)
class Part:
    kind: str                    # text | placeholder | tool_call | tool_result | thinking | refusal
    text: str = ""
    name: str | None = None      # tool_call: the tool's name
    call_id: str | None = None   # tool_call / tool_result: the id linking them
    is_error: bool = False       # tool_result reported as an error


@dataclass(slots=True)
class Message:
    role: str                    # system | user | assistant | tool
    parts: list[Part] = field(default_factory=list)
    answer: bool = False         # from the response (the model's answer), not the request
    name: str | None = None      # a participant name, or "choice 2" when several were returned


def conversation(request_body: Any, response_body: Any, path: str | None = None) -> list[Message] | None:
    """The messages of a call, prompt first then answer; None when the request's shape is unknown."""
    if not isinstance(request_body, dict):
        return None
    response = response_body if isinstance(response_body, dict) else None
    reader = _pick(request_body, response, path or "")
    if reader is None:
        return None
    asked, answered = reader
    messages = [m for m in asked(request_body) if m.parts]
    if response is not None and "error" not in response:
        for message in answered(response):
            if message.parts:
                message.answer = True
                messages.append(message)
    return messages


Reader = tuple[Any, Any]


def _pick(request: dict[str, Any], response: dict[str, Any] | None, path: str) -> Reader | None:
    if isinstance(request.get("messages"), list):
        return _chat_request, _chat_response
    if "prompt" in request and not path.endswith("/messages"):
        return _completion_request, _completion_response
    if "input" in request or "instructions" in request:
        embeddings = path.endswith("/embeddings") or (
            response is not None and response.get("object") == "list" and "output" not in response)
        if embeddings:
            return _embedding_request, _embedding_response
        return _responses_request, _responses_response
    return None


# -- chat: OpenAI chat completions and Anthropic messages ----------------------------------------------

def _role(raw: Any) -> str:
    role = _ROLE_ALIASES.get(str(raw), str(raw))
    return role if role in ROLES else "user"


def _chat_request(body: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    system = body.get("system")          # Anthropic: a string or text blocks
    if system:
        messages.append(Message("system", _blocks(system)))
    for raw in body["messages"]:
        if not isinstance(raw, dict):
            continue
        messages.extend(_chat_message(raw))
    return messages


def _chat_message(raw: dict[str, Any]) -> list[Message]:
    role = _role(raw.get("role"))
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    parts = _reasoning(raw)
    if role == "tool":                  # OpenAI: the content is the result of one call
        result = Part("tool_result", _flatten(raw.get("content")), call_id=_str(raw.get("tool_call_id")))
        if result.call_id is None and name:
            result.name = name
        return [Message("tool", [result])]
    parts += _blocks(raw.get("content"))
    if isinstance(raw.get("refusal"), str) and raw["refusal"]:
        parts.append(Part("refusal", raw["refusal"]))
    if raw.get("audio"):
        parts.append(Part("placeholder", "[audio]"))
    for call in raw.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") or {}
            parts.append(Part("tool_call", _arguments(function.get("arguments")), name=_str(function.get("name")),
                              call_id=_str(call.get("id"))))
    legacy = raw.get("function_call")
    if isinstance(legacy, dict):
        parts.append(Part("tool_call", _arguments(legacy.get("arguments")), name=_str(legacy.get("name"))))
    # Anthropic puts tool results in a user turn: shown as tool messages, in their order.
    messages: list[Message] = []
    pending: list[Part] = []
    for part in parts:
        if part.kind == "tool_result" and role == "user":
            if pending:
                messages.append(Message(role, pending, name=name))
                pending = []
            messages.append(Message("tool", [part]))
        else:
            pending.append(part)
    if pending or not messages:
        messages.append(Message(role, pending, name=name))
    return messages


def _reasoning(raw: dict[str, Any]) -> list[Part]:
    """Reasoning some OpenAI-compatible providers return beside the content (DeepSeek, vLLM…)."""
    for key in ("reasoning_content", "reasoning"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return [Part("thinking", value)]
    return []


def _chat_response(body: dict[str, Any]) -> list[Message]:
    if isinstance(body.get("choices"), list):      # OpenAI
        choices = [c for c in body["choices"] if isinstance(c, dict)]
        messages: list[Message] = []
        for choice in choices:
            message = choice.get("message") or choice.get("delta")
            if not isinstance(message, dict):
                continue
            for found in _chat_message({"role": "assistant", **message}):
                if len(choices) > 1:
                    found.name = f"choice {choice.get('index', choices.index(choice))}"
                messages.append(found)
        return messages
    if isinstance(body.get("content"), list):      # Anthropic
        return [Message("assistant", _blocks(body["content"]))]
    return []


def _blocks(content: Any) -> list[Part]:
    """Message content of either provider: a string, or a list of typed blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Part("text", content)] if content else []
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return [Part("text", _json(content))]
    parts: list[Part] = []
    for block in content:
        if isinstance(block, str):
            parts.append(Part("text", block))
        elif isinstance(block, dict):
            parts.extend(_block(block))
    return parts


def _block(block: dict[str, Any]) -> list[Part]:
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text", "summary_text") or (kind is None and "text" in block):
        return [Part("text", _str(block.get("text")) or "")]
    if kind in ("image_url", "image", "input_image"):
        return [Part("placeholder", _image(block))]
    if kind in ("thinking", "reasoning_text"):
        return [Part("thinking", _str(block.get("thinking", block.get("text"))) or "")]
    if kind == "redacted_thinking":
        return [Part("thinking", "[redacted thinking]")]
    if kind == "refusal":
        return [Part("refusal", _str(block.get("refusal")) or "")]
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return [Part("tool_call", _arguments(block.get("input")), name=_str(block.get("name")),
                     call_id=_str(block.get("id")))]
    if kind == "tool_result" or (isinstance(kind, str) and kind.endswith("_tool_result")):
        return [Part("tool_result", _flatten(block.get("content")), call_id=_str(block.get("tool_use_id")),
                     is_error=bool(block.get("is_error")))]
    if kind in ("input_audio", "audio"):
        audio = block.get("input_audio")
        audio = audio if isinstance(audio, dict) else {}
        return [Part("placeholder", f"[audio: {audio.get('format', 'unknown format')}]")]
    if kind in ("document", "file", "input_file"):
        return [Part("placeholder", f"[{kind}: {_file_name(block)}]")]
    return [Part("placeholder", f"[{kind or 'unknown'} block]")]


def _image(block: dict[str, Any]) -> str:
    url: Any = block.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    source = block.get("source")
    if isinstance(source, dict):                   # Anthropic: base64, url or file
        if source.get("type") == "base64":
            return f"[image: {source.get('media_type', 'base64')}, {_size(source.get('data'))}]"
        url = source.get("url") or source.get("file_id")
    if url is None:
        url = block.get("file_id")
    if isinstance(url, str) and url.startswith("data:"):
        media = url[5:].split(";", 1)[0] or "inline"
        return f"[image: {media}, {_size(url.split(',', 1)[-1])}]"
    if isinstance(url, str) and url:
        return f"[image: {url if len(url) <= MAX_URL_SHOWN else url[:MAX_URL_SHOWN] + '…'}]"
    return "[image]"


def _file_name(block: dict[str, Any]) -> str:
    for container in (block, block.get("file"), block.get("source")):
        if isinstance(container, dict):
            for key in ("filename", "title", "file_id", "media_type", "url"):
                if isinstance(container.get(key), str):
                    value: str = container[key]
                    return value if len(value) <= MAX_URL_SHOWN else value[:MAX_URL_SHOWN] + "…"
    return "attached"


def _size(data: Any) -> str:
    if not isinstance(data, str):
        return "inline"
    size = len(data) * 3 // 4
    return f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} B"


def _flatten(content: Any) -> str:
    """A tool result's content (text, or blocks that may hold images) as text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in _blocks(content))


# -- OpenAI completions ------------------------------------------------------------------------------

def _completion_request(body: dict[str, Any]) -> list[Message]:
    prompt = body.get("prompt")
    prompts = prompt if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else [prompt]
    return [Message("user", [Part("text", p if isinstance(p, str) else _json(p))]) for p in prompts if p]


def _completion_response(body: dict[str, Any]) -> list[Message]:
    if isinstance(body.get("completion"), str):     # Anthropic's legacy text completions
        return [Message("assistant", [Part("text", body["completion"])])]
    choices = [c for c in body.get("choices") or () if isinstance(c, dict)]
    messages = []
    for i, choice in enumerate(choices):
        text = choice.get("text")
        if isinstance(text, str):
            messages.append(Message("assistant", [Part("text", text)] if text else [],
                                    name=f"choice {choice.get('index', i)}" if len(choices) > 1 else None))
    return messages


# -- OpenAI Responses API -------------------------------------------------------------------------------

def _responses_request(body: dict[str, Any]) -> list[Message]:
    messages: list[Message] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append(Message("system", [Part("text", body["instructions"])]))
    items = body.get("input")
    if isinstance(items, str):
        messages.append(Message("user", [Part("text", items)]))
    elif isinstance(items, list):
        messages.extend(_items(items, default_role="user"))
    return messages


def _responses_response(body: dict[str, Any]) -> list[Message]:
    output = body.get("output")
    return _items(output, default_role="assistant") if isinstance(output, list) else []


def _items(items: Iterable[Any], *, default_role: str) -> list[Message]:
    """Responses API items; consecutive non-message items of one side share a message."""
    messages: list[Message] = []

    def add(role: str, part: Part) -> None:
        if messages and messages[-1].role == role != "tool":
            messages[-1].parts.append(part)
        else:
            messages.append(Message(role, [part]))

    for item in items:
        if isinstance(item, str):
            add(default_role, Part("text", item))
            continue
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" or ("role" in item and "content" in item):
            role = _role(item.get("role", default_role))
            messages.append(Message(role, _blocks(item.get("content"))))
        elif kind in ("function_call", "custom_tool_call"):
            add("assistant", Part("tool_call", _arguments(item.get("arguments", item.get("input"))),
                                  name=_str(item.get("name")), call_id=_str(item.get("call_id"))))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append(Message("tool", [Part("tool_result", _flatten(item.get("output")),
                                                  call_id=_str(item.get("call_id")))]))
        elif kind == "reasoning":
            summary = "\n".join(_str(s.get("text")) or "" for s in item.get("summary") or () if isinstance(s, dict))
            add("assistant", Part("thinking", summary or "[reasoning]"))
        elif isinstance(kind, str) and kind.endswith("_call"):
            add("assistant", Part("tool_call", _arguments(item.get("action", item.get("arguments"))),
                                  name=kind.removesuffix("_call"), call_id=_str(item.get("id"))))
        else:
            add(default_role, Part("placeholder", f"[{kind}]"))
    return messages


# -- OpenAI embeddings --------------------------------------------------------------------------------

def _embedding_request(body: dict[str, Any]) -> list[Message]:
    value = body.get("input")
    inputs = value if isinstance(value, list) and all(isinstance(v, str) for v in value) else [value]
    return [Message("user", [Part("text", v if isinstance(v, str) else f"[tokens: {_json(v)}]")])
            for v in inputs if v is not None]


def _embedding_response(body: dict[str, Any]) -> list[Message]:
    data = [d for d in body.get("data") or () if isinstance(d, dict)]
    if not data:
        return []
    vector = data[0].get("embedding")
    shape = f"{len(vector)} dimensions" if isinstance(vector, list) else "base64"
    plural = "s" if len(data) != 1 else ""
    return [Message("assistant", [Part("placeholder", f"[embedding: {len(data)} vector{plural}, {shape}]")])]


# -- helpers -----------------------------------------------------------------------------------------

def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def _arguments(value: Any) -> str:
    """Tool arguments pretty-printed: OpenAI sends a JSON string, Anthropic an object."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value           # arguments cut short (a partial stream) stay as they came
        return parsed if isinstance(parsed, str) else _json(parsed)
    return _json(value)
