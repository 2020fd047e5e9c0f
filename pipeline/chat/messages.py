"""tracemill messages → the shape Hugging Face chat templates expect.

Why one converter: tracemill stores tool calls as `{id, name, arguments: JSON string}` (the schema), while
templates index `tool_call.function.name` and apply `tojson` to the arguments (a string would be encoded
twice). Templates also differ in what they tolerate: Llama 3.1 treats any message that *has* a
`tool_calls` key as a tool call (so the key is left out when empty), Mistral concatenates `content`
(so None becomes "") and requires 9-character alphanumeric call ids (the family maps ids).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any


def field(obj: Any, key: str, default: Any = None) -> Any:
    """Messages may be plain dicts or pydantic models (schema.Message)."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def canonical_arguments(arguments: Any) -> Any:
    """Arguments as a JSON value. Strings are decoded (twice when an export double-encoded them);
    a string that is not JSON is kept as is, so rendering never fails on bad data."""
    value = arguments if arguments not in (None, "") else {}
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def hf_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Tool definitions in OpenAI form (`{"type": "function", "function": {...}}`), or None for no tools."""
    if not tools:
        return None
    out = []
    for t in tools:
        t = dict(t) if isinstance(t, dict) else t.model_dump()
        out.append(t if "function" in t else {"type": "function", "function": t})
    return out


def hf_messages(messages: Sequence[Any], call_id: Callable[[str], str] = str) -> list[dict[str, Any]]:
    """Messages with OpenAI-style tool calls (arguments as a JSON value), content never None, reasoning
    under both names templates use, and call ids passed through `call_id` (a family's id rule)."""
    out: list[dict[str, Any]] = []
    for n, m in enumerate(messages):
        role = field(m, "role")
        msg: dict[str, Any] = {"role": role, "content": field(m, "content") or ""}
        reasoning = field(m, "reasoning") or field(m, "reasoning_content")
        if reasoning:
            msg["reasoning"] = msg["reasoning_content"] = reasoning
        calls = field(m, "tool_calls") or []
        if calls:
            msg["tool_calls"] = []
            for k, c in enumerate(calls):
                inner = field(c, "function") or c
                cid = field(c, "id") or f"call_{n}_{k}"
                msg["tool_calls"].append({"type": "function", "id": call_id(str(cid)), "function": {
                    "name": field(inner, "name"), "arguments": canonical_arguments(field(inner, "arguments"))}})
        if role == "tool":
            if field(m, "tool_call_id") is not None:
                msg["tool_call_id"] = call_id(str(field(m, "tool_call_id")))
            if field(m, "name"):
                msg["name"] = field(m, "name")
        out.append(msg)
    return out
