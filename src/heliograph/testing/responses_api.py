"""OpenAI Responses API wire shapes (``POST */responses``), JSON and SSE.

The stream is the documented event sequence, every event carrying ``sequence_number``:
``response.created``, ``response.in_progress``, ``response.output_item.added``, then for a
message ``response.content_part.added``, ``response.output_text.delta``…,
``response.output_text.done``, ``response.content_part.done`` (for a function call
``response.function_call_arguments.delta``… and ``.done``), ``response.output_item.done`` and
finally ``response.completed`` (``response.incomplete`` when ``max_output_tokens`` cut the text).
The openai SDK's stream accumulator checks ids and item identities, so they are kept stable.
"""

from __future__ import annotations

from typing import Any

from heliograph.testing.content import (
    PER_TOOL_TOKENS,
    PRIMING_TOKENS,
    Answer,
    Prompt,
    RequestError,
    argument_pieces,
    limit_of,
    message_tokens,
    pieces,
    sse_event,
    text_of,
    tool_call_for,
)

__all__ = ["response_body", "response_frames", "response_prompt"]


def response_prompt(body: dict[str, Any], default_model: str) -> Prompt:
    raw_input = body.get("input")
    items: list[Any]
    if isinstance(raw_input, str):
        items = [{"role": "user", "content": raw_input}]
    elif isinstance(raw_input, list) and raw_input and all(isinstance(i, dict) for i in raw_input):
        items = raw_input
    else:
        raise RequestError("'input' must be a string or a non-empty array of input items")
    # Only function tools can be called by the fake; built-in tools are just counted.
    tools = body.get("tools") or []
    prompt_tokens = PRIMING_TOKENS + PER_TOOL_TOKENS * len(tools)
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        prompt_tokens += message_tokens(instructions)
    last_user = ""
    for item in items:
        text = text_of(item)
        prompt_tokens += message_tokens(text)
        if item.get("role") == "user":
            last_user = text
    tool = None
    choice = body.get("tool_choice")
    functions = [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]
    if functions and items[-1].get("role") == "user" and choice != "none":
        chosen = functions[0]
        if isinstance(choice, dict) and choice.get("name"):
            chosen = next((t for t in functions if t.get("name") == choice["name"]), chosen)
        tool = tool_call_for(str(chosen.get("name", "tool")), chosen.get("parameters"))
    return Prompt(
        model=str(body.get("model") or default_model),
        last_user=last_user,
        prompt_tokens=prompt_tokens,
        tool=tool,
        limit=limit_of(body.get("max_output_tokens")),
    )


def _usage(answer: Answer) -> dict[str, Any]:
    prompt = max(answer.prompt_tokens, answer.cache_read)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": answer.cache_read, "cache_write_tokens": answer.cache_write},
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
        "total_tokens": prompt + answer.completion_tokens,
    }


def _status(answer: Answer) -> str:
    return "incomplete" if answer.truncated else "completed"


def _output_item(answer: Answer, request_id: str, done: bool) -> dict[str, Any]:
    """The one output item, as announced (``done=False``) or as finished."""
    if answer.tool is not None:
        return {
            "id": f"fc_{request_id}",
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "call_id": f"call_{request_id}",
            "name": answer.tool.name,
            "arguments": answer.tool.arguments if done else "",
        }
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "status": _status(answer) if done else "in_progress",
        "role": "assistant",
        "content": [_text_part(answer.text)] if done else [],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _response(
    answer: Answer, request_id: str, created: int, body: dict[str, Any], *, status: str, output: list[Any]
) -> dict[str, Any]:
    finished = status != "in_progress"
    return {
        "id": f"resp_{request_id}",
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": created if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": answer.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": _usage(answer) if finished and answer.usage else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def response_body(answer: Answer, request_id: str, created: int, body: dict[str, Any]) -> dict[str, Any]:
    output = [_output_item(answer, request_id, done=True)]
    return _response(answer, request_id, created, body, status=_status(answer), output=output)


def response_frames(answer: Answer, request_id: str, created: int, body: dict[str, Any]) -> list[bytes]:
    frames: list[bytes] = []

    def emit(event_type: str, payload: dict[str, Any]) -> None:
        frames.append(sse_event(event_type, {"type": event_type, "sequence_number": len(frames), **payload}))

    in_progress = _response(answer, request_id, created, body, status="in_progress", output=[])
    emit("response.created", {"response": in_progress})
    emit("response.in_progress", {"response": in_progress})
    item = _output_item(answer, request_id, done=False)
    item_ref = {"item_id": item["id"], "output_index": 0}
    emit("response.output_item.added", {"output_index": 0, "item": item})
    if answer.tool is not None:
        for piece in argument_pieces(answer.tool.arguments):
            emit("response.function_call_arguments.delta", {**item_ref, "delta": piece})
        emit("response.function_call_arguments.done", {**item_ref, "arguments": answer.tool.arguments})
    else:
        part_ref = {**item_ref, "content_index": 0}
        emit("response.content_part.added", {**part_ref, "part": _text_part("")})
        for piece in pieces(answer.text):
            emit("response.output_text.delta", {**part_ref, "delta": piece, "logprobs": []})
        emit("response.output_text.done", {**part_ref, "text": answer.text, "logprobs": []})
        emit("response.content_part.done", {**part_ref, "part": _text_part(answer.text)})
    done_item = _output_item(answer, request_id, done=True)
    emit("response.output_item.done", {"output_index": 0, "item": done_item})
    status = _status(answer)
    final = _response(answer, request_id, created, body, status=status, output=[done_item])
    emit(f"response.{status}", {"response": final})
    return frames
