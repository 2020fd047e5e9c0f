"""OpenAI-chat-shaped messages → `Message`: the lingua franca most exports are a dialect of.

One tolerant converter serves OpenAI chat / fine-tuning files, tau-bench, tau2, SWE-agent, ToolBench,
LangChain messages inside Langfuse, and the legacy `function_call` / `role: function` form, because
their differences are small and field-level: where the call id lives (`tool_call_id`, tau2's `id`),
whether calls are wrapped in `function`, whether `arguments` is a string, an object or LangChain's
`args`, and how usage and errors are spelled. Content parts that are not text (images, audio, …)
are kept verbatim in `meta.parts` instead of being dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.capture.importers.base import FieldError, as_text, at, parse_time
from pipeline.capture.importers.calls import CallLinker, decode_arguments
from pipeline.schema import Message, StepMeta, ToolCall

ROLES = {
    "system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
    "ai": "assistant", "model": "assistant", "gpt": "assistant", "bot": "assistant", "tool": "tool",
    "function": "tool", "observation": "tool", "ipython": "tool",
}
TEXT_PARTS = {"text", "input_text", "output_text"}


def norm_role(role: Any) -> str:
    """Map a source role onto system|user|assistant|tool; an unknown role is an error, not a guess."""
    mapped = ROLES.get(str(role).lower()) if role is not None else None
    if mapped is None:
        raise FieldError("role", f"unknown role {role!r} (expected one of {sorted(ROLES)})")
    return mapped


def text_of(content: Any, extra: list[Any] | None = None) -> str | None:
    """Text of a content value: a string, or the text parts of a part list joined by newlines.
    Non-text parts go to `extra` so the caller can keep them."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return as_text(content)
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") in TEXT_PARTS and "text" in part:
            texts.append(as_text(part["text"]) or "")
        elif isinstance(part, dict) and part.get("type") == "refusal":
            texts.append(str(part.get("refusal", "")))
        elif extra is not None:
            extra.append(part)
    return "\n".join(texts) if texts or not content else None


def make_meta(*, timestamp: Any = None, model: str | None = None, usage: dict[str, Any] | None = None,
              latency_ms: Any = None, cost_usd: Any = None, finish_reason: str | None = None,
              **extra: Any) -> StepMeta | None:
    """Per-step telemetry; usage may use OpenAI (`prompt_tokens`), Anthropic/Responses
    (`input_tokens`) or Langfuse (`input`) names. Returns None when there is nothing to say."""
    usage = usage or {}

    def pick(*keys: str) -> int | None:
        for k in keys:
            if isinstance(usage.get(k), int | float) and not isinstance(usage.get(k), bool):
                return int(usage[k])
        return None

    fields: dict[str, Any] = {
        "timestamp": parse_time(timestamp), "model": model,
        "input_tokens": pick("prompt_tokens", "input_tokens", "input", "promptTokens"),
        "output_tokens": pick("completion_tokens", "output_tokens", "output", "completionTokens"),
        "latency_ms": latency_ms, "cost_usd": cost_usd, "finish_reason": finish_reason,
        **extra,
    }
    fields = {k: v for k, v in fields.items() if v is not None and v != [] and v != {}}
    return StepMeta(**fields) if fields else None


def tool_calls_of(raw_calls: Iterable[Any], linker: CallLinker, notes: Counter[str]) -> list[ToolCall]:
    """`[{id, function: {name, arguments}}]`, tau2's flat `{id, name, arguments}` or LangChain's
    `{id, name, args}`; arguments normalised to one level of JSON."""
    calls = []
    for j, tc in enumerate(raw_calls):
        with at("tool_calls", j):
            fn = tc["function"] if isinstance(tc.get("function"), dict) else tc
            name = fn["name"]
            args = fn["arguments"] if "arguments" in fn else fn.get("args", fn.get("input"))
            calls.append(ToolCall(id=linker.call(tc.get("id"), name), name=name,
                                  arguments=with_path("function.arguments", decode_arguments, args, notes)))
    return calls


def with_path(path: str, fn: Any, *args: Any) -> Any:
    with at(path):
        return fn(*args)


def chat_message(d: dict[str, Any], linker: CallLinker, notes: Counter[str], *,
                 result_id_keys: Sequence[str] = ("tool_call_id",), meta: StepMeta | None = None,
                 role: str | None = None) -> Message:
    """Convert one chat message dict (see module docstring for the dialects accepted)."""
    if not isinstance(d, dict):
        raise FieldError("", f"expected a message object, got {type(d).__name__}")
    role = role or norm_role(d.get("role") or d.get("type"))
    extra: list[Any] = []
    raw_content = d.get("content")
    with at("content"):
        content = text_of(raw_content, extra)
    if role == "tool" and extra:  # a structured tool result (objects, not typed parts): keep it as JSON
        content, extra = as_text(raw_content), []
    reasoning = d.get("reasoning_content") or d.get("reasoning") or d.get("thinking")
    kwargs = d.get("additional_kwargs") if isinstance(d.get("additional_kwargs"), dict) else {}
    raw_calls = d.get("tool_calls") or kwargs.get("tool_calls") or []
    calls: list[ToolCall] = []
    extra_meta: dict[str, Any] = {}
    if raw_calls and role != "assistant":
        extra_meta["tool_calls"] = raw_calls  # e.g. tau2 user-side tools: kept, not linked
        notes["non_assistant_tool_calls"] += len(raw_calls)
    elif raw_calls:
        calls = tool_calls_of(raw_calls, linker, notes)
    fc = d.get("function_call") or kwargs.get("function_call")
    if isinstance(fc, dict) and role == "assistant":
        with at("function_call"):
            name = fc["name"]
            calls.append(ToolCall(id=linker.call(fc.get("id"), name), name=name,
                                  arguments=decode_arguments(fc.get("arguments"), notes)))
    tool_call_id = None
    if role == "tool":
        source_id = next((d[k] for k in result_id_keys if d.get(k) not in (None, "")), None)
        tool_call_id = linker.result(source_id, d.get("name"))
    if extra:
        extra_meta["parts"] = extra
    if extra_meta:
        base = meta.model_dump(exclude_none=True) if meta else {}
        meta = StepMeta(**{**base, **extra_meta})
    return Message(
        role=role, content=content, reasoning=reasoning if isinstance(reasoning, str) else None,
        tool_calls=calls, tool_call_id=tool_call_id, name=d.get("name"),
        is_error=bool(d.get("is_error") or d.get("error") is True or d.get("status") == "error"),
        meta=meta)


def chat_messages(raw: Sequence[Any], linker: CallLinker, notes: Counter[str], path: str = "messages",
                  **kw: Any) -> list[Message]:
    """Convert a list of chat messages, naming `messages.N.<field>` in any error."""
    if not isinstance(raw, list):
        raise FieldError(path, f"expected a list of messages, got {type(raw).__name__}")
    out = []
    for i, m in enumerate(raw):
        with at(path, i):
            out.append(chat_message(m, linker, notes, **kw))
    return out


DISPLAY_RE = re.compile(r"^(system|user|assistant|tool|function|human|ai)\s*:[ \t]?", re.MULTILINE)


def parse_display(text: str) -> list[Message]:
    """A flattened `role: text` transcript (tau-bench few-shot strings, AutoGen prompts in Langfuse).
    A line starting with a role name opens a new message; other lines continue the previous one.
    `None` as a whole assistant turn (a tool call whose details the flattening lost) becomes None."""
    found = list(DISPLAY_RE.finditer(text))
    if not found or text[: found[0].start()].strip():
        raise FieldError("", "not a 'role: text' transcript")
    out = []
    for k, m in enumerate(found):
        end = found[k + 1].start() if k + 1 < len(found) else len(text)
        body = text[m.end():end].removesuffix("\n")
        role = norm_role(m.group(1))
        out.append(Message(role=role, content=None if body == "None" and role == "assistant" else body))
    return out
