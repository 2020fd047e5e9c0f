"""OpenAI formats: chat / fine-tuning JSONL (incl. preference fine-tuning) and Responses API items.

Chat records are `{messages, tools?, parallel_tool_calls?, …}` (fine-tuning JSONL), a bare message
list, or the preference form `{input: {messages, tools}, preferred_output, non_preferred_output}`,
which becomes two trajectories and a `Preference`. These files carry no ids, so a trajectory id is a
hash of the record's content: stable across re-imports, distinct for distinct records.

Responses items (`message`, `function_call`, `function_call_output`, `reasoning`, …) are regrouped
into chat turns: consecutive assistant-side items (reasoning, output text, calls) form ONE assistant
message, the way a chat template would render them; the reasoning summary goes to `reasoning`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    FieldError,
    Item,
    as_text,
    at,
    build_preference,
    build_trajectory,
    content_hash,
    loads_layers,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker, decode_arguments
from pipeline.capture.importers.chat import chat_messages, make_meta, norm_role, text_of
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message, StepMeta, ToolCall

RESPONSE_ITEM_TYPES = {"message", "function_call", "function_call_output", "reasoning", "custom_tool_call",
                       "custom_tool_call_output", "web_search_call", "file_search_call", "computer_call"}


# ---- chat / fine-tuning ---------------------------------------------------------------------------
def sniff_chat(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and isinstance(value[0], dict) and "role" in value[0] and (
            "content" in value[0] or "tool_calls" in value[0])
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("input"), dict) and "preferred_output" in value:
        return True
    msgs = value.get("messages")
    return isinstance(msgs, list) and bool(msgs) and all(
        isinstance(m, dict) and "role" in m and not _typed_value_content(m) for m in msgs)


def _typed_value_content(m: dict[str, Any]) -> bool:
    """LLaMA-Factory v1 / Anthropic use typed content lists that this format does not."""
    content = m.get("content")
    return isinstance(content, list) and any(
        isinstance(p, dict) and ("value" in p or p.get("type") in ("tool_use", "tool_result", "thinking"))
        for p in content)


def convert_chat(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        if isinstance(value, list):
            value = {"messages": value}
        if not isinstance(value, dict):
            raise FieldError("", f"expected an object with `messages`, got {type(value).__name__}")
        if "preferred_output" in value:
            yield from _preference(value, ctx)
            return
        yield _chat_trajectory(ctx, value, content_hash(value), [("messages", value.get("messages"))])

    return per_record(src.conversations(), one)


def _tools_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    tools = record.get("tools") or [{"type": "function", "function": f} for f in record.get("functions") or []]
    if isinstance(tools, str):  # some exporters keep the tool list as a JSON string
        tools = loads_layers(tools)
    if not isinstance(tools, list):
        raise FieldError("tools", f"expected a list of tool definitions, got {type(tools).__name__}")
    return tools


def _chat_trajectory(ctx: Context, record: dict[str, Any], digest: str,
                     segments: list[tuple[str, Any]], **meta: Any) -> Any:
    """`segments` are (path, raw message list) pairs converted with one linker, in order."""
    notes: Counter[str] = Counter()
    linker = CallLinker(notes)
    messages = [m for path, raw in segments for m in chat_messages(raw, linker, notes, path=path)]
    return build_trajectory(
        ctx, trajectory_id=stable_id(ctx.fmt, digest), messages=messages, original=record,
        agent="openai-chat", model=record.get("model"), tools=_tools_of(record), notes=notes, **meta)


def _preference(record: dict[str, Any], ctx: Context) -> Iterator[Item]:
    """OpenAI preference fine-tuning: the shared input plus each output is one trajectory."""
    with at("input"):
        prompt = record["input"]["messages"]
        tools_rec = {**record["input"], "model": record.get("model")}
    digest = content_hash(record)
    trajs = [_chat_trajectory(ctx, tools_rec, f"{digest}:{key}", [("input.messages", prompt), (key, record.get(key))],
                              preference_role=key) for key in ("preferred_output", "non_preferred_output")]
    trajs[0].metadata["original"] = record
    trajs[1].metadata["original"] = {"see": trajs[0].trajectory_id}
    yield from trajs
    yield build_preference(trajs[0], trajs[1], source="dataset")


# ---- Responses API items --------------------------------------------------------------------------
def sniff_responses(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and isinstance(value[0], dict) and value[0].get("type") in RESPONSE_ITEM_TYPES
    if not isinstance(value, dict):
        return False
    if value.get("object") == "response" and isinstance(value.get("output"), list):
        return True
    items = value.get("input") if isinstance(value.get("input"), list) else value.get("output")
    return isinstance(items, list) and any(isinstance(i, dict) and i.get("type") in RESPONSE_ITEM_TYPES
                                           for i in items)


class _Turns:
    """Accumulates Responses items into chat messages (consecutive assistant items → one message)."""

    def __init__(self, notes: Counter[str]):
        self.notes = notes
        self.linker = CallLinker(notes)
        self.messages: list[Message] = []
        self._asst: dict[str, Any] | None = None

    def _assistant(self) -> dict[str, Any]:
        if self._asst is None:
            self._asst = {"role": "assistant", "content": None, "reasoning": None, "tool_calls": [], "parts": []}
        return self._asst

    def flush(self, meta: StepMeta | None = None) -> None:
        a, self._asst = self._asst, None
        if a is None:
            return
        parts = a.pop("parts")
        if parts:
            meta = StepMeta(**{**(meta.model_dump(exclude_none=True) if meta else {}), "parts": parts})
        self.messages.append(Message(**a, meta=meta))

    def add(self, item: dict[str, Any]) -> None:
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = norm_role(item.get("role"))
            extra: list[Any] = []
            with at("content"):
                text = text_of(item.get("content"), extra)
            if role == "assistant":
                a = self._assistant()
                a["content"] = text if a["content"] is None else f"{a['content']}\n{text}"
                a["parts"].extend(extra)
                return
            self.flush()
            meta = StepMeta(parts=extra) if extra else None
            self.messages.append(Message(role=role, content=text, meta=meta))
        elif kind == "reasoning":
            texts = [p.get("text", "") for p in (item.get("summary") or []) + (item.get("content") or [])
                     if isinstance(p, dict)]
            a = self._assistant()
            joined = "\n".join(t for t in texts if t)
            a["reasoning"] = joined if a["reasoning"] is None else f"{a['reasoning']}\n{joined}"
            if item.get("encrypted_content"):
                a["parts"].append({"type": "reasoning", "encrypted_content": item["encrypted_content"]})
        elif kind in ("function_call", "custom_tool_call"):
            name = item["name"]
            args = item.get("arguments") if kind == "function_call" else {"input": item.get("input")}
            with at("arguments"):
                arguments = decode_arguments(args, self.notes)
            self._assistant()["tool_calls"].append(
                ToolCall(id=self.linker.call(item.get("call_id") or item.get("id"), name), name=name,
                         arguments=arguments))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self.flush()
            output = item.get("output")
            content = text_of(output) if isinstance(output, list) else as_text(output)
            self.messages.append(Message(role="tool", content=content,
                                         tool_call_id=self.linker.result(item.get("call_id"))))
        else:  # built-in tool calls (web search, file search, computer use): kept, not interpreted
            self._assistant()["parts"].append(item)
            self.notes[f"kept_{kind}_items"] += 1


def responses_messages(items: list[Any], notes: Counter[str], *, instructions: Any = None,
                       output: list[Any] | None = None, output_meta: StepMeta | None = None,
                       path: str = "input") -> list[Message]:
    """Input items, then output items (whose last assistant message gets `output_meta`)."""
    turns = _Turns(notes)
    if isinstance(instructions, str) and instructions:
        turns.messages.append(Message(role="system", content=instructions))
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for i, item in enumerate(items or []):
        with at(path, i):
            turns.add(item)
    turns.flush()
    for i, item in enumerate(output or []):
        with at("output", i):
            turns.add(item)
    turns.flush(output_meta)
    return turns.messages


def convert_responses(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        if isinstance(value, list):
            value = {"input": value}
        notes: Counter[str] = Counter()
        resp = value.get("response") if isinstance(value.get("response"), dict) else value
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else None
        meta = make_meta(model=resp.get("model"), usage=usage, timestamp=resp.get("created_at"))
        messages = responses_messages(value.get("input") or [], notes, instructions=resp.get("instructions"),
                                      output=resp.get("output"), output_meta=meta)
        ident = resp.get("id") or value.get("id")
        yield build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, ident or content_hash(value)), messages=messages,
            original=value, agent="openai-responses", model=resp.get("model"),
            started_at=resp.get("created_at"), tools=[t for t in resp.get("tools") or [] if t.get("name")],
            notes=notes, session_id=resp.get("conversation") if isinstance(resp.get("conversation"), str) else None)

    return per_record(src.conversations(), one)
