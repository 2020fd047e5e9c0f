"""OpenHands saved trajectories: a JSON array of event-stream events (GUI "export trajectory",
`save_trajectory_path`). One file is one conversation; it carries no session id of its own.

Event: `{id, timestamp, source: user|agent|environment, message}` plus `action` + `args`, or
`observation` + `content` + `extras` + `cause` (the id of the action it answers). `message` actions are
chat turns (`args.content`, `args.image_urls` → placeholders). Actions with `tool_call_metadata` are the
model's tool calls: name and id from the metadata, arguments from the model response's own
`tool_calls` (what the model produced), the action's `thought` as the turn's text, model and usage from
`model_response`; actions answering one model response form one assistant turn. Observations answer a
call through `tool_call_metadata.tool_call_id`, else through `cause`. `finish` gets no observation: its
text is the final answer (`metadata.final_answer`). State changes (`change_agent_state`,
`agent_state_changed`, `null` observations) are bookkeeping, kept as metadata event counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    Item,
    as_text,
    at,
    build_trajectory,
    content_hash,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import make_meta
from pipeline.capture.importers.parts import Assembler
from pipeline.capture.importers.sessions import first_time, image_placeholder, last_time, mark_unanswered
from pipeline.capture.importers.source import Record, Source

SOURCES = {"user", "agent", "environment"}


def _is_event(e: Any) -> bool:
    return isinstance(e, dict) and e.get("source") in SOURCES and ("action" in e or "observation" in e)


def sniff(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and _is_event(value[0])


class _Events:
    def __init__(self, notes: Counter[str]):
        self.asm = Assembler(CallLinker(notes), notes)
        self.calls: dict[Any, str] = {}  # action event id -> tool_call_id
        self.response: Any = None
        self.meta: Any = None
        self.events: Counter[str] = Counter()
        self.final: str | None = None
        self.models: Counter[str] = Counter()

    def close(self) -> None:
        if self.response is not None:
            self.asm.end("assistant", self.meta)
            self.response = None

    def message(self, e: dict[str, Any]) -> None:
        self.close()
        args = e.get("args") or {}
        role = {"user": "user", "agent": "assistant"}.get(e.get("source"), "user")
        self.asm.begin()
        self.asm.text(role, args.get("content") if "content" in args else e.get("message"))
        for url in args.get("image_urls") or []:
            text, part = image_placeholder(None, url=url)
            self.asm.text(role, text)
            self.asm.keep(role, part)
        self.asm.end(role, make_meta(timestamp=e.get("timestamp")))

    def tool_action(self, e: dict[str, Any], tcm: dict[str, Any]) -> None:
        resp = tcm.get("model_response") or {}
        if resp.get("id") is None or resp.get("id") != self.response:
            self.close()
            self.response = resp.get("id", e.get("id"))
            self.meta = make_meta(timestamp=e.get("timestamp"), model=resp.get("model"), usage=resp.get("usage"),
                                  response_id=resp.get("id"))
            self.models.update([resp["model"]] if resp.get("model") else [])
            self.asm.begin()
        args = dict(e.get("args") or {})
        thought = args.pop("thought", None)
        if thought:
            self.asm.text("assistant", thought)
        call_id = tcm.get("tool_call_id")
        produced = [tc.get("function", {}).get("arguments") for c in resp.get("choices") or []
                    for tc in (c.get("message") or {}).get("tool_calls") or [] if tc.get("id") == call_id]
        self.asm.call("assistant", call_id, tcm.get("function_name") or e["action"],
                      produced[0] if produced else args)
        self.calls[e.get("id")] = str(call_id)
        if e["action"] == "finish":
            self.final = args.get("final_thought") or e.get("message") or as_text(args.get("outputs"))
            self.asm.text("assistant", self.final)

    def observation(self, e: dict[str, Any]) -> None:
        tcm = e.get("tool_call_metadata") or {}
        call_id = tcm.get("tool_call_id") or self.calls.get(e.get("cause"))
        if call_id is None:
            self.events[f"observation.{e.get('observation')}"] += 1
            return
        self.close()
        extras = e.get("extras") or {}
        failed = e.get("observation") == "error" or extras.get("exit_code") not in (None, 0)
        self.asm.result(call_id, as_text(e.get("content")), name=tcm.get("function_name"), is_error=failed)


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        ev = _Events(notes)
        for i, e in enumerate(value):
            with at(i):
                tcm = e.get("tool_call_metadata")
                if e.get("action") in ("message", "system"):
                    ev.message(e)
                elif "action" in e and isinstance(tcm, dict):
                    ev.tool_action(e, tcm)
                elif "observation" in e:
                    ev.observation(e)
                else:
                    ev.events[f"action.{e.get('action')}"] += 1
        ev.close()
        messages, pending = mark_unanswered(ev.asm.messages)
        finish = [m.tool_calls[0].id for m in messages if m.tool_calls and m.tool_calls[0].name == "finish"]
        times = [e.get("timestamp") for e in value]
        yield build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, content_hash(value[:1]), ctx.file), messages=messages,
            original={"events": len(value)}, agent="openhands",
            model=ev.models.most_common(1)[0][0] if ev.models else None, started_at=first_time(times),
            ended_at=last_time(times), notes=notes, final_answer=ev.final, events=dict(ev.events) or None,
            unanswered_tool_calls=[c for c in pending if c not in finish] or None)

    whole = [Record(0, None, src.value)] if src.kind == "json" else src.records()
    return per_record(whole, one)
