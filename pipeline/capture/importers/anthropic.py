"""Anthropic Messages API: `{system?, messages[{role, content: str | blocks}], tools?, response?}`.

Blocks: `text`, `thinking` (→ `reasoning`; its signature is kept in `meta`), `redacted_thinking`,
`tool_use` (→ tool call, `input` object encoded as the JSON string), `tool_result` inside a *user*
turn (→ a `tool` message linked by `tool_use_id`, `is_error` kept), and the server-side
`server_tool_use` / `*_tool_result` pair. A record may carry the model's reply separately
(`response`, a Message object with `usage` and `stop_reason`); it is appended as the last turn.
A bare Message object (`{"type": "message", ...}`) imports as a one-turn trajectory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    FieldError,
    Item,
    at,
    build_trajectory,
    content_hash,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import make_meta, norm_role, text_of
from pipeline.capture.importers.parts import Assembler
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message, StepMeta

BLOCK_TYPES = {"text", "tool_use", "tool_result", "thinking", "redacted_thinking", "server_tool_use",
               "image", "document"}


def sniff(value: Any) -> bool:
    if isinstance(value, dict) and value.get("type") == "message" and isinstance(value.get("content"), list):
        return True
    msgs = value.get("messages") if isinstance(value, dict) else value
    if not isinstance(msgs, list) or not msgs:
        return False
    blocks = [b for m in msgs if isinstance(m, dict) and isinstance(m.get("content"), list)
              for b in m["content"] if isinstance(b, dict)]
    typed = any(b.get("type") in ("tool_use", "tool_result", "thinking", "redacted_thinking") for b in blocks)
    has_system = isinstance(value, dict) and "system" in value and "messages" in value
    return typed or (has_system and bool(blocks) and all("value" not in b for b in blocks))


def _blocks(asm: Assembler, role: str, content: Any) -> None:
    if isinstance(content, str):
        asm.text(role, content)
        return
    if not isinstance(content, list):
        raise FieldError("content", f"expected a string or a list of blocks, got {type(content).__name__}")
    for j, b in enumerate(content):
        with at("content", j):
            kind = b.get("type")
            if kind == "text":
                asm.text(role, b.get("text"))
            elif kind == "thinking":
                asm.reasoning(role, b.get("thinking"))
                if b.get("signature"):
                    asm.keep(role, {"type": "thinking_signature", "signature": b["signature"]})
            elif kind in ("tool_use", "server_tool_use"):
                asm.call(role, b.get("id"), b["name"], b.get("input"))
            elif kind == "tool_result" or (kind or "").endswith("_tool_result"):
                extra: list[Any] = []
                result = b.get("content")
                text = text_of(result, extra) if isinstance(result, list) else result
                asm.result(b.get("tool_use_id"), text if not extra else result,
                           is_error=bool(b.get("is_error")))
            else:
                asm.keep(role, b)


def _message(asm: Assembler, m: dict[str, Any], meta: StepMeta | None = None) -> None:
    role = norm_role(m.get("role"))
    asm.begin()
    _blocks(asm, role, m.get("content"))
    asm.end(role, meta)


def _response_meta(resp: dict[str, Any]) -> StepMeta | None:
    return make_meta(model=resp.get("model"), usage=resp.get("usage"), finish_reason=resp.get("stop_reason"),
                     response_id=resp.get("id"))


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        if isinstance(value, list):
            value = {"messages": value}
        if value.get("type") == "message":  # a bare response object
            value = {"messages": [], "response": value, "model": value.get("model")}
        notes: Counter[str] = Counter()
        asm = Assembler(CallLinker(notes), notes)
        system = value.get("system")
        if system:
            with at("system"):
                asm.messages.append(Message(role="system", content=text_of(system)))
        msgs = value.get("messages")
        if not isinstance(msgs, list):
            raise FieldError("messages", "expected a list of messages")
        for i, m in enumerate(msgs):
            with at("messages", i):
                _message(asm, m)
        resp = value.get("response")
        if isinstance(resp, dict):
            with at("response"):
                _message(asm, {"role": resp.get("role", "assistant"), "content": resp.get("content")},
                         _response_meta(resp))
        ident = resp.get("id") if isinstance(resp, dict) else value.get("id")
        model = value.get("model") or (resp.get("model") if isinstance(resp, dict) else None)
        yield build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, ident or content_hash(value)), messages=asm.messages,
            original=value, agent="anthropic-messages", model=model, tools=value.get("tools") or [], notes=notes)

    return per_record(src.conversations(), one)
