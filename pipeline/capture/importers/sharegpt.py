"""ShareGPT (FastChat, LLaMA-Factory tool variant) and LLaMA-Factory v1 typed messages.

ShareGPT: `{conversations: [{from, value}], tools?: <JSON string>, system?}` with `from` in
human / gpt / system / function_call / observation. A `function_call` turn's value is a JSON string
`{"name", "arguments"}` (or a list of them for parallel calls) and an `observation` answers it; there
are no call ids, so ids are generated (`call_0`, …) and results link by order.

LLaMA-Factory v1: `{messages: [{role, content: [{type: text|reasoning|tool_call, value}]}], tools}`.
Quirk found in its demo data: one `tool` message may bundle the results of several parallel calls as
a JSON array of `{tool_call_id, name, content}` whose ids match nothing; such a message is split into
one tool message per call so every call gets its own linked result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson

from pipeline.capture.importers.base import (
    Context,
    FieldError,
    Item,
    as_text,
    at,
    build_trajectory,
    content_hash,
    loads_layers,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker, decode_arguments
from pipeline.capture.importers.chat import ROLES, norm_role
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message, ToolCall


def sniff_sharegpt(value: Any) -> bool:
    conv = value.get("conversations") if isinstance(value, dict) else None
    return isinstance(conv, list) and bool(conv) and isinstance(conv[0], dict) and "from" in conv[0]


def sniff_llamafactory(value: Any) -> bool:
    msgs = value.get("messages") if isinstance(value, dict) else None
    return isinstance(msgs, list) and any(
        isinstance(m, dict) and isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and "value" in p and "type" in p for p in m["content"]) for m in msgs)


def _calls(value: Any, linker: CallLinker, notes: Counter[str]) -> list[ToolCall]:
    """A function_call value: JSON `{"name", "arguments"}` or a list of those."""
    parsed = loads_layers(value) if isinstance(value, str) else value
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for k, c in enumerate(items):
        with at(k if len(items) > 1 else None):
            if not isinstance(c, dict) or "name" not in c:
                raise FieldError("", f"expected a JSON object with `name` and `arguments`, got {value!r:.80}")
            calls.append(ToolCall(id=linker.call(c.get("id"), c["name"]), name=c["name"],
                                  arguments=decode_arguments(c.get("arguments"), notes)))
    return calls


def _results(content: str | None, n_calls: int, linker: CallLinker, notes: Counter[str]) -> list[Message]:
    """Tool result(s) for the last assistant turn; a bundled array for parallel calls is split."""
    if n_calls > 1 and content:
        try:
            parts = orjson.loads(content)
        except orjson.JSONDecodeError:
            parts = None
        if isinstance(parts, list) and len(parts) == n_calls and all(isinstance(p, dict) for p in parts):
            notes["split_bundled_tool_results"] += 1
            return [Message(role="tool", name=p.get("name"),
                            content=as_text(p["content"] if "content" in p else p),
                            tool_call_id=linker.result(None, p.get("name"))) for p in parts]
    return [Message(role="tool", content=content, tool_call_id=linker.result(None, None))]


def _tools(record: dict[str, Any]) -> list[dict[str, Any]]:
    with at("tools"):
        tools = loads_layers(record.get("tools") or [])
        if not isinstance(tools, list):
            raise FieldError("", f"expected a (JSON-encoded) list of tools, got {type(tools).__name__}")
        return tools


def _trajectory(ctx: Context, record: dict[str, Any], messages: list[Message], notes: Counter[str],
                agent: str) -> Any:
    return build_trajectory(
        ctx, trajectory_id=stable_id(ctx.fmt, record.get("id"), content_hash(record)), messages=messages,
        original=record, agent=agent, tools=_tools(record), notes=notes, source_id=record.get("id"))


def convert_sharegpt(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        linker = CallLinker(notes)
        messages: list[Message] = []
        if value.get("system"):
            messages.append(Message(role="system", content=value["system"]))
        last_calls = 0
        for i, turn in enumerate(value["conversations"]):
            with at("conversations", i):
                who = str(turn.get("from", turn.get("role")))
                text = turn.get("value", turn.get("content"))
                if who == "function_call":
                    with at("value"):
                        calls = _calls(text, linker, notes)
                    messages.append(Message(role="assistant", tool_calls=calls))
                    last_calls = len(calls)
                elif who == "observation":
                    messages.extend(_results(as_text(text), last_calls, linker, notes))
                    last_calls = 0
                else:
                    if who not in ROLES:
                        raise FieldError("from", f"unknown speaker {who!r}")
                    messages.append(Message(role=norm_role(who), content=as_text(text)))
        yield _trajectory(ctx, value, messages, notes, "sharegpt")

    return per_record(src.records(), one)


def convert_llamafactory(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        linker = CallLinker(notes)
        messages: list[Message] = []
        last_calls = 0
        for i, m in enumerate(value["messages"]):
            with at("messages", i):
                role = norm_role(m.get("role"))
                content = m.get("content")
                parts = [{"type": "text", "value": content}] if isinstance(content, str) else content or []
                texts, reasoning, calls = [], [], []
                for j, p in enumerate(parts):
                    with at("content", j):
                        if p["type"] == "text":
                            texts.append(as_text(p["value"]))
                        elif p["type"] in ("reasoning", "thinking"):
                            reasoning.append(as_text(p["value"]))
                        elif p["type"] in ("tool_call", "function_call"):
                            with at("value"):
                                calls.extend(_calls(p["value"], linker, notes))
                        else:
                            raise FieldError("type", f"unknown content type {p['type']!r}")
                text = "\n".join(t or "" for t in texts) if texts else None
                if role == "tool":
                    messages.extend(_results(text, last_calls, linker, notes))
                    last_calls = 0
                    continue
                if calls and role != "assistant":
                    raise FieldError("content", f"tool_call parts in a {role} message")
                messages.append(Message(role=role, content=text, tool_calls=calls,
                                        reasoning="\n".join(r or "" for r in reasoning) if reasoning else None))
                last_calls = len(calls)
        yield _trajectory(ctx, value, messages, notes, "llamafactory")

    return per_record(src.records(), one)
