"""Claude Managed Agents session recordings: JSON Lines of `["<sdk method>", <payload>]` with method
`client.beta.sessions.create` (the session object: id, agent model, tools), `.events.send` (what the
client sent) and `.events.stream` (every event the session emitted, with `id` and `processed_at`).

The stream is the conversation: `user.message`, `agent.message` (text blocks), `agent.tool_use` /
`agent.custom_tool_use` (calls; the event id is the call id) answered by `agent.tool_result` /
`user.custom_tool_result` (`tool_use_id` / `custom_tool_use_id`), and `span.model_request_end` whose
`model_usage` is the usage of the model call that produced the preceding agent turn. Sent user events
are echoed in the stream, so `events.send` is only used when the stream has no user message at all.
Status events are bookkeeping (metadata counts). The trajectory id is the session id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import Context, Item, at, build_trajectory, stable_id
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import make_meta, text_of
from pipeline.capture.importers.parts import Assembler
from pipeline.capture.importers.sessions import first_time, last_time, mark_unanswered, whole_file
from pipeline.capture.importers.source import Source
from pipeline.schema import StepMeta

PREFIX = "client.beta.sessions."


def sniff(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and str(value[0]).startswith(PREFIX)


def _stream(lines: list[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    session: dict[str, Any] = {}
    stream, sent = [], []
    for method, payload in lines:
        if method == f"{PREFIX}create" and isinstance(payload, dict):
            session = payload
        elif method == f"{PREFIX}events.stream" and isinstance(payload, dict):
            stream.append(payload)
        elif method == f"{PREFIX}events.send" and isinstance(payload, list) and len(payload) == 2:
            sent += (payload[1] or {}).get("events") or []
    if not any(e.get("type") == "user.message" for e in stream):
        stream = sent + stream
    return session, stream


def _usage(asm: Assembler, usage: dict[str, Any]) -> None:
    """Usage of a finished model call onto the last assistant message it produced."""
    for i in range(len(asm.messages) - 1, -1, -1):
        m = asm.messages[i]
        if m.role == "assistant":
            base = m.meta.model_dump(exclude_none=True) if m.meta else {}
            extra = make_meta(usage=usage, **{k: v for k, v in usage.items() if k.startswith("cache_")})
            asm.messages[i] = m.model_copy(update={"meta": StepMeta(**{**base, **extra.model_dump(exclude_none=True)})})
            return


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    records, errors = whole_file(src)
    yield from errors
    session, stream = _stream([r.value for r in records if sniff(r.value)])
    notes: Counter[str] = Counter()
    asm = Assembler(CallLinker(notes), notes)
    model = ((session.get("agent") or {}).get("model") or {}).get("id")
    events: Counter[str] = Counter()
    for i, e in enumerate(stream):
        kind = str(e.get("type"))
        with at("events", i):
            if kind in ("user.message", "agent.message"):
                role = "user" if kind.startswith("user") else "assistant"
                asm.begin()
                asm.text(role, text_of(e.get("content")))
                asm.end(role, make_meta(timestamp=e.get("processed_at"), model=model if role == "assistant" else None))
            elif kind in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
                asm.call("assistant", e.get("id"), e["name"], e.get("input"))
                asm.flush(make_meta(timestamp=e.get("processed_at"), model=model))
            elif kind in ("agent.tool_result", "user.custom_tool_result", "agent.mcp_tool_result"):
                content = e.get("content")
                asm.result(e.get("tool_use_id") or e.get("custom_tool_use_id"),
                           text_of(content) if isinstance(content, list) else content, is_error=bool(e.get("is_error")))
            elif kind == "span.model_request_end" and isinstance(e.get("model_usage"), dict):
                _usage(asm, e["model_usage"])
            else:
                events[kind] += 1
    asm.flush()
    messages, pending = mark_unanswered(asm.messages)
    agent = session.get("agent") or {}
    times = [e.get("processed_at") for e in stream]
    sid = session.get("id") or next((r.value[1][0] for r in records if sniff(r.value) and "send" in r.value[0]), None)
    yield build_trajectory(
        ctx, trajectory_id=stable_id(ctx.fmt, sid or src.name), messages=messages,
        original={"session": {k: v for k, v in session.items() if k != "agent"}, "agent_name": agent.get("name")},
        agent="claude-managed-agent", model=model, session_id=sid,
        started_at=session.get("created_at") or first_time(times), ended_at=last_time(times), notes=notes,
        agent_id=agent.get("id"), agent_name=agent.get("name"), system_prompt=agent.get("system"),
        tools=[], events=dict(events) or None, unanswered_tool_calls=pending or None)
