"""Typed-part messages (OTel GenAI `parts`, Anthropic content blocks) → chat `Message`s.

Both formats put several kinds of things in one message: text, reasoning, tool calls and — unlike
chat formats — tool *results* (Anthropic `tool_result` inside a user turn, OTel `tool_call_response`,
server-side tool results inside an assistant turn). `Assembler` walks the parts in order and splits
a message wherever a tool result sits, so `assistant[call, result, text]` becomes assistant(call),
tool(result), assistant(text): the order the model actually saw. Unknown parts (images, files,
server tool payloads) are kept in `meta.parts`.

This module also holds the `otel_genai_messages` format: a file holding a JSON array of
`gen_ai.input.messages` / `gen_ai.output.messages` (as in the semantic-convention examples).
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
    build_trajectory,
    content_hash,
    loads_layers,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker, decode_arguments
from pipeline.capture.importers.chat import norm_role
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message, StepMeta, ToolCall


class Assembler:
    """Builds messages from parts; see the module docstring for the splitting rule."""

    def __init__(self, linker: CallLinker, notes: Counter[str]):
        self.linker, self.notes = linker, notes
        self.messages: list[Message] = []
        self._cur: dict[str, Any] | None = None
        self._mark = 0

    def begin(self) -> None:
        self.flush()
        self._mark = len(self.messages)

    def _open(self, role: str) -> dict[str, Any]:
        if self._cur is None or self._cur["role"] != role:
            self.flush()
            self._cur = {"role": role, "text": [], "reasoning": [], "calls": [], "parts": []}
        return self._cur

    def text(self, role: str, text: str | None) -> None:
        self._open(role)["text"].append(text or "")

    def reasoning(self, role: str, text: str | None) -> None:
        self._open(role)["reasoning"].append(text or "")

    def call(self, role: str, call_id: Any, name: str, arguments: Any) -> None:
        if role != "assistant":
            raise FieldError("", f"a tool call in a {role} message")
        with at("arguments"):
            args = decode_arguments(arguments, self.notes)
        self._open(role)["calls"].append(ToolCall(id=self.linker.call(call_id, name), name=name, arguments=args))

    def result(self, call_id: Any, content: Any, *, name: str | None = None, is_error: bool = False) -> None:
        self.flush()
        self.messages.append(Message(role="tool", content=as_text(content), name=name, is_error=is_error,
                                     tool_call_id=self.linker.result(call_id, name)))

    def keep(self, role: str, part: Any) -> None:
        self._open(role)["parts"].append(part)

    def flush(self, meta: StepMeta | None = None) -> None:
        cur, self._cur = self._cur, None
        if cur is None:
            return
        if cur["parts"]:
            meta = StepMeta(**{**(meta.model_dump(exclude_none=True) if meta else {}), "parts": cur["parts"]})
        self.messages.append(Message(
            role=cur["role"], content="\n".join(cur["text"]) if cur["text"] else None,
            reasoning="\n".join(cur["reasoning"]) if cur["reasoning"] else None,
            tool_calls=cur["calls"], meta=meta))

    def end(self, role: str, meta: StepMeta | None = None, name: str | None = None) -> None:
        """Close the source message: `meta` goes to the last message it produced; a message with
        no parts at all is still a turn and is kept (content None)."""
        self.flush()
        produced = self.messages[self._mark:]
        if not produced:
            self.notes["empty_messages"] += 1
            self.messages.append(Message(role=role, content=None, name=name, meta=meta))
        elif meta is not None or name is not None:
            last = produced[-1]
            if meta is not None and last.meta is not None:
                meta = StepMeta(**{**last.meta.model_dump(exclude_none=True), **meta.model_dump(exclude_none=True)})
            update: dict[str, Any] = {"meta": meta or last.meta}
            if name is not None and last.role != "tool":
                update["name"] = name
            self.messages[-1] = last.model_copy(update=update)


def otel_message(asm: Assembler, msg: dict[str, Any], meta: StepMeta | None = None) -> None:
    """One OTel GenAI message `{role, parts, finish_reason?, name?}` into the assembler."""
    role = norm_role(msg.get("role"))
    asm.begin()
    parts = msg.get("parts")
    if not isinstance(parts, list):
        raise FieldError("parts", f"expected a list of parts, got {type(parts).__name__}")
    for j, p in enumerate(parts):
        with at("parts", j):
            kind = p.get("type")
            if kind == "text":
                asm.text(role, as_text(p.get("content")))
            elif kind in ("reasoning", "thinking"):
                asm.reasoning(role, as_text(p.get("content")))
            elif kind == "tool_call":
                asm.call(role, p.get("id"), p["name"], p.get("arguments"))
            elif kind == "tool_call_response":
                content = p["response"] if "response" in p else p.get("result")
                asm.result(p.get("id"), content, name=p.get("name"))
            elif kind == "server_tool_call":
                asm.call(role, p.get("id"), p["name"], p.get("server_tool_call"))
            elif kind == "server_tool_call_response":
                asm.result(p.get("id"), p.get("server_tool_call_response"))
            else:
                asm.keep(role, p)
    finish = msg.get("finish_reason")
    if finish:
        meta = StepMeta(**{**(meta.model_dump(exclude_none=True) if meta else {}), "finish_reason": finish})
    asm.end(role, meta, name=msg.get("name"))


def otel_messages(raw: Any, asm: Assembler, path: str, meta: StepMeta | None = None) -> None:
    """A JSON array of OTel messages (possibly still a JSON string, as in span attributes)."""
    if isinstance(raw, str):
        raw = loads_layers(raw)
    if not isinstance(raw, list):
        raise FieldError(path, f"expected a JSON array of messages, got {type(raw).__name__}")
    for i, m in enumerate(raw):
        with at(path, i):
            otel_message(asm, m, meta if i == len(raw) - 1 else None)


def sniff_otel_messages(value: Any) -> bool:
    sample = value[0] if isinstance(value, list) and value else value
    return isinstance(sample, dict) and "role" in sample and isinstance(sample.get("parts"), list)


def convert_otel_messages(src: Source, ctx: Context) -> Iterator[Item]:
    """Each array of messages is one trajectory; its id is a hash of the content."""

    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        asm = Assembler(CallLinker(notes), notes)
        msgs = value.get("messages") if isinstance(value, dict) and "parts" not in value else value
        if isinstance(msgs, dict):
            msgs = [msgs]
        otel_messages(msgs, asm, "messages" if isinstance(value, dict) else "")
        yield build_trajectory(ctx, trajectory_id=stable_id(ctx.fmt, content_hash(value)),
                               messages=asm.messages, original=value, agent="otel-genai", notes=notes)

    return per_record(src.conversations(), one)
