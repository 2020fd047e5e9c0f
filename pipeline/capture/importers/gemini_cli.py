"""Gemini CLI chat recordings (`~/.gemini/tmp/<project hash>/chats/session-*.json`).

One JSON object per session: `{sessionId, projectHash, startTime, lastUpdated, messages[]}`. A message is
`{id, timestamp, type: user|gemini|info|error|warning, content}`; user content is a list of parts
(`[{text}]`, older files: a string), gemini content a string, with `thoughts[{subject, description}]`
(→ reasoning), `tokens{input, output, cached, thoughts, tool, total}` and `model`. Tool calls live
INSIDE the gemini message, call and result together (`toolCalls[{id, name, args, result[{functionResponse
{response{output|error}}}], status}]`), so each becomes a call on the assistant turn followed by a tool
message. `info`/`error`/`warning` messages are the CLI talking, not the model: kept as metadata events.
The trajectory id is the session id, so a re-import of the grown file replaces it.
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
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import make_meta
from pipeline.capture.importers.parts import Assembler
from pipeline.capture.importers.sessions import image_placeholder, mark_unanswered
from pipeline.capture.importers.source import Record, Source


def sniff(value: Any) -> bool:
    return isinstance(value, dict) and "sessionId" in value and isinstance(value.get("messages"), list) and (
        "projectHash" in value or "startTime" in value)


def _parts(asm: Assembler, role: str, content: Any) -> None:
    for p in content if isinstance(content, list) else [content]:
        if isinstance(p, str) or (isinstance(p, dict) and "text" in p):
            asm.text(role, p if isinstance(p, str) else p.get("text"))
        elif isinstance(p, dict) and isinstance(p.get("inlineData"), dict):
            text, part = image_placeholder(p["inlineData"].get("mimeType"), p["inlineData"].get("data"))
            asm.text(role, text)
            asm.keep(role, part)
        elif p is not None:
            asm.keep(role, p)


def _tool_output(call: dict[str, Any]) -> tuple[Any, bool]:
    for r in call.get("result") or []:
        resp = (r.get("functionResponse") or {}).get("response") if isinstance(r, dict) else None
        if isinstance(resp, dict):
            return (resp["error"], True) if "error" in resp else (resp.get("output", resp), False)
    return call.get("resultDisplay"), call.get("status") == "error"


def _gemini(asm: Assembler, m: dict[str, Any]) -> None:
    asm.begin()
    _parts(asm, "assistant", m.get("content"))
    for t in m.get("thoughts") or []:
        asm.reasoning("assistant", f"{t.get('subject', '')}: {t.get('description', '')}".strip(": "))
    calls = m.get("toolCalls") or []
    for j, c in enumerate(calls):
        with at("toolCalls", j):
            asm.call("assistant", c.get("id"), c["name"], c.get("args"))
    asm.end("assistant", make_meta(timestamp=m.get("timestamp"), model=m.get("model"), usage=m.get("tokens"),
                                   **{f"{k}_tokens": v for k, v in (m.get("tokens") or {}).items()
                                      if k in ("cached", "thoughts", "tool", "total")}))
    for c in calls:
        out, failed = _tool_output(c)
        asm.result(c.get("id"), as_text(out), name=c.get("name"), is_error=failed)


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        asm = Assembler(CallLinker(notes), notes)
        events, models = [], Counter()
        for i, m in enumerate(value["messages"]):
            with at("messages", i):
                kind = m.get("type")
                if kind == "user":
                    asm.begin()
                    _parts(asm, "user", m.get("content"))
                    asm.end("user", make_meta(timestamp=m.get("timestamp")))
                elif kind in ("gemini", "model", "assistant"):
                    _gemini(asm, m)
                    models.update([m["model"]] if m.get("model") else [])
                else:
                    events.append({k: m.get(k) for k in ("type", "timestamp", "content")})
        messages, pending = mark_unanswered(asm.messages)
        yield build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, value["sessionId"]), messages=messages,
            original={k: v for k, v in value.items() if k != "messages"}, agent="gemini-cli",
            model=models.most_common(1)[0][0] if models else None, session_id=value["sessionId"],
            started_at=value.get("startTime"), ended_at=value.get("lastUpdated"), notes=notes,
            project_hash=value.get("projectHash"), cli_events=events or None, unanswered_tool_calls=pending or None)

    return per_record(src.records(), one)
