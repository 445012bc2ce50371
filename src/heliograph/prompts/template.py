"""Templates are request bodies with variables in their strings; this module is pure (no I/O).

Variables, both accepted everywhere:

    {{hc:name:type}}   Helicone's prompts 2025 (spaces allowed around the parts); `number` inputs
                       must convert to a number, `boolean` ones be true/false/yes/no (any case);
                       other types are unchecked
    {{name}}           the seed's `Helicone-Prompt-Variables` form, untyped

Replacement (Helicone's rules): a string that is exactly one tag becomes the raw input (arrays and
objects included); otherwise each tag is replaced by the input's text. A tag with no input, or with
a falsy input inside text, stays as written. Object keys are templated too.

Partials, `{{hcp:<prompt id>:<message index>[:<environment>]}}`, insert the text of a message of
another prompt's version (production by default); they are resolved before variables, so a partial
may bring variables of its own.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

NAME = r"[A-Za-z_-][A-Za-z0-9_-]*"
TAG = re.compile(r"\{\{\s*(?:hc\s*:\s*(?P<hc>" + NAME + r")\s*:\s*(?P<type>" + NAME + r")|(?P<seed>"
                 + r"[A-Za-z_][A-Za-z0-9_.-]*" + r"))\s*\}\}")
PARTIAL = re.compile(r"\{\{\s*hcp\s*:\s*([^:{}\s]+)\s*:\s*(\d+)\s*(?::\s*([A-Za-z0-9_.-]+)\s*)?\}\}")
LEGACY_INPUT = re.compile(r'<helicone-prompt-input\s+key\s*=\s*"([^"]*)"\s*/?>(.*?)</helicone-prompt-input>', re.S)
LEGACY_STATIC = re.compile(r"<helicone-prompt-static>(.*?)</helicone-prompt-static>", re.S)
HELICONE_FIELDS = ("prompt_id", "version_id", "environment", "inputs")
# Per call, not part of what a prompt is: left out of an auto-versioned template.
PER_CALL_FIELDS = frozenset({"stream", "stream_options", "user", *HELICONE_FIELDS})
BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no"})


class PromptError(ValueError):
    """A prompt that cannot be used as asked; the message names the problem (a 400 to the client)."""


def variables(template: Any) -> list[dict[str, str]]:
    """The variables a template declares, in order of first use: [{"name", "type"}] (seed tags: "string")."""
    found: dict[str, str] = {}
    for text in _strings(template):
        for match in TAG.finditer(text):
            name = match["hc"] or match["seed"]
            found.setdefault(name, match["type"] or "string")
    return [{"name": name, "type": kind} for name, kind in found.items()]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        if "{{" in value:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


Partial = tuple[str, int, str]      # (prompt id, message index, environment)


def partials(template: Any) -> list[Partial]:
    """The partials a template uses, in order of first use."""
    found: dict[Partial, None] = {}
    for text in _strings(template):
        if "hcp" in text:
            for match in PARTIAL.finditer(text):
                found.setdefault((match[1], int(match[2]), match[3] or "production"), None)
    return list(found)


def message_text(body: Mapping[str, Any], index: int, name: str) -> str:
    """The text of message `index` of a version's body (text parts joined), for a partial."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not 0 <= index < len(messages) or not isinstance(messages[index], dict):
        raise PromptError(f"Partial {name}: the prompt has no message {index}.")
    content = messages[index].get("content")
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else _text(content)


def insert_partials(value: Any, texts: Mapping[Partial, str]) -> Any:
    """`value` with every partial replaced by its message's text (`texts`, from `partials`)."""
    if isinstance(value, str):
        if "hcp" not in value:
            return value
        return PARTIAL.sub(lambda m: texts[(m[1], int(m[2]), m[3] or "production")], value)
    if isinstance(value, dict):
        return {key: insert_partials(item, texts) for key, item in value.items()}
    if isinstance(value, list):
        return [insert_partials(item, texts) for item in value]
    return value


def type_problems(template: Any, inputs: Mapping[str, Any]) -> list[str]:
    """One line per input of the wrong type, in Helicone's words."""
    problems = []
    for declared in variables(template):
        name, kind = declared["name"], declared["type"]
        if name in inputs and not _fits(kind, inputs[name]):
            value = inputs[name]
            shown = value if isinstance(value, str) else orjson.dumps(value).decode()
            problems.append(f"Variable '{name}' is '{kind}' but got '{shown}'")
    return problems


def _fits(kind: str, value: Any) -> bool:
    if kind == "number":
        if isinstance(value, bool):
            return False
        if isinstance(value, int | float):
            return True
        if isinstance(value, str) and value.strip():
            try:
                float(value)
            except ValueError:
                return False
            return True
        return False
    if kind == "boolean":
        return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS)
    return True


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def fill(value: Any, inputs: Mapping[str, Any]) -> Any:
    """`value` with its variables replaced from `inputs` (no type checks: see `compile_body`)."""
    if isinstance(value, str):
        if "{{" not in value:
            return value
        whole = TAG.fullmatch(value)
        if whole is not None:
            name = whole["hc"] or whole["seed"]
            return inputs[name] if name in inputs else value
        return TAG.sub(lambda m: _replacement(m, inputs), value)
    if isinstance(value, dict):
        filled = {}
        for key, item in value.items():
            new_key = fill(key, inputs) if "{{" in key else key
            if not isinstance(new_key, str):
                raise PromptError(f"Variable in the key {key!r} must be a string, got {_text(new_key)!r}")
            filled[new_key] = fill(item, inputs)
        return filled
    if isinstance(value, list):
        return [fill(item, inputs) for item in value]
    return value


def _replacement(match: re.Match[str], inputs: Mapping[str, Any]) -> str:
    name = match["hc"] or match["seed"]
    value = inputs.get(name)
    return _text(value) if value else match[0]     # missing or falsy (Helicone's rule in text): the tag stays


def compile_body(template: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The template with `inputs` in; PromptError listing every input of the wrong type."""
    if problems := type_problems(template, inputs):
        raise PromptError("\n".join(problems))
    filled = fill(dict(template), inputs)
    assert isinstance(filled, dict)
    return filled


def merge(compiled: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """A compiled version merged with the request: the request's parameters override the
    template's; messages and tools are the template's followed by the request's; Helicone's four
    fields are dropped."""
    merged = dict(compiled)
    for key, value in request.items():
        if key in HELICONE_FIELDS:
            continue
        if key in ("messages", "tools") and isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def auto_template(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an auto-versioned prompt stores of a request: all but the per-call fields."""
    return {key: value for key, value in body.items() if key not in PER_CALL_FIELDS}


def body_hash(template: Any) -> str:
    return hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).hexdigest()


def legacy_inputs(body: Any) -> tuple[Any, Any, dict[str, str]] | None:
    """Helicone's inline tags: (clean body to send, template with `{{key}}` in place of each tag,
    inputs); None when the body has no tag."""
    inputs: dict[str, str] = {}

    def walk(value: Any) -> tuple[Any, Any]:
        if isinstance(value, str):
            if "<helicone-prompt-" not in value:
                return value, value
            template = LEGACY_INPUT.sub(lambda m: _legacy_tag(m, inputs), value)
            clean = LEGACY_INPUT.sub(lambda m: m[2], value)
            return LEGACY_STATIC.sub(r"\1", clean), LEGACY_STATIC.sub(r"\1", template)
        if isinstance(value, dict):
            pairs = {key: walk(item) for key, item in value.items()}
            return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
        if isinstance(value, list):
            items = [walk(item) for item in value]
            return [i[0] for i in items], [i[1] for i in items]
        return value, value

    clean, template = walk(body)
    if clean == body:
        return None
    return clean, template, inputs


def _legacy_tag(match: re.Match[str], inputs: dict[str, str]) -> str:
    key = match[1]
    inputs.setdefault(key, match[2])     # a repeated key is the same variable
    return "{{" + key + "}}"


def pretty(body: Any) -> str:
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def diff(old: Any, new: Any, old_name: str, new_name: str) -> str:
    """A unified diff of two bodies, pretty-printed with sorted keys so only real changes show."""
    lines = difflib.unified_diff(pretty(old).splitlines(keepends=True), pretty(new).splitlines(keepends=True),
                                 fromfile=old_name, tofile=new_name)
    return "".join(lines)
