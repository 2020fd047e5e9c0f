"""Codex CLI / IDE rollouts (`~/.codex/sessions/YYYY/MM/DD/rollout-<ts>-<uuid>.jsonl`).

Since Aug 2025 (0.2x-0.4x and the newer 0.1xx) every line is `{timestamp, type, payload}` with `type`
in `session_meta`, `turn_context`, `response_item`, `event_msg`, `compacted`; older rollouts have no
envelope (a first `{id, timestamp, instructions, git}` line, then bare Responses items and
`{"record_type": "state"}` lines). Both are read here.

The conversation is the `response_item` payloads, which are OpenAI Responses items, so they go
through the Responses converter (`openai.responses_messages`): consecutive reasoning / text / calls
form one assistant turn, reasoning summaries become `reasoning` (their `encrypted_content` is dropped: opaque bytes only the API can read). `event_msg` repeats the same text
(`user_message`, `agent_message`, `agent_reasoning`) and is NOT used for messages, or every turn would
appear twice; only its `token_count` events are read (cumulative usage). `arguments` are JSON in a
JSON string (decoded to one level by the converter) and a shell call's `output` is a JSON string
`{"output": ..., "metadata": {exit_code, duration_seconds}}`: its text becomes the tool message and
the metadata goes to the message's meta. Pasted images (`input_image` data URLs) become placeholders.
The first user items are CLI-injected context (`<environment_context>`, AGENTS.md instructions);
they stay in the conversation (the model saw them) and are marked `meta.cli_injected`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    Item,
    build_trajectory,
    content_hash,
    loads_layers,
    stable_id,
)
from pipeline.capture.importers.openai import RESPONSE_ITEM_TYPES, responses_messages
from pipeline.capture.importers.sessions import (
    first_time,
    image_placeholder,
    last_time,
    mark_unanswered,
    whole_file,
)
from pipeline.capture.importers.source import Source
from pipeline.schema import Message, StepMeta

ENVELOPE_TYPES = {"session_meta", "turn_context", "response_item", "event_msg", "compacted"}
INJECTED = ("<environment_context>", "<user_instructions>", "<INSTRUCTIONS>", "# AGENTS.md")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def sniff(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    if value.get("type") in ENVELOPE_TYPES and isinstance(value.get("payload"), dict) and "timestamp" in value:
        return True
    return {"id", "timestamp", "instructions"} <= set(value) and "type" not in value  # pre-envelope rollouts


def _content(parts: Any) -> Any:
    """Message content with each `input_image` replaced by a placeholder text and its description."""
    if not isinstance(parts, list):
        return parts
    out: list[Any] = []
    for p in parts:
        if isinstance(p, dict) and p.get("type") == "input_image":
            text, part = image_placeholder(None, url=p.get("image_url"))
            out += [{"type": "input_text", "text": text}, part]
        else:
            out.append(p)
    return out


class _Rollout:
    """What the lines of one rollout say, collected in one pass."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.times: list[Any] = []
        self.models: Counter[str] = Counter()
        self.usage: dict[str, Any] | None = None
        self.outputs: dict[str, dict[str, Any]] = {}
        self.events: Counter[str] = Counter()
        self.compacted: list[Any] = []

    def add(self, line: dict[str, Any]) -> None:
        self.times.append(line.get("timestamp"))
        kind, payload = line.get("type"), line.get("payload")
        if kind not in ENVELOPE_TYPES:  # pre-envelope layout: header, bare items, state lines
            if "instructions" in line and "id" in line and not self.meta:
                self.meta = line
            elif line.get("type") in RESPONSE_ITEM_TYPES or "role" in line:
                self._item(line)
            else:
                self.events[str(line.get("record_type") or "unknown")] += 1
            return
        if kind == "session_meta":
            self.meta = payload
        elif kind == "turn_context":
            self.events["turn_context"] += 1
            if payload.get("model"):
                self.models[str(payload["model"])] += 1
        elif kind == "response_item":
            self._item(payload)
        elif kind == "compacted":
            self.compacted.append(payload)
        else:
            self.events[f"event_msg.{payload.get('type')}"] += 1
            info = payload.get("info")
            if payload.get("type") == "token_count" and isinstance(info, dict):
                self.usage = info.get("total_token_usage") or self.usage

    def _item(self, item: dict[str, Any]) -> None:
        item = dict(item)
        if item.pop("encrypted_content", None):  # opaque to everyone but the API: bytes, not data
            self.events["encrypted_reasoning_dropped"] += 1
        if item.get("type") == "message" or "role" in item:
            item["content"] = _content(item.get("content"))
        elif item.get("type") in ("function_call_output", "custom_tool_call_output"):
            unpacked = loads_layers(item.get("output"))
            if isinstance(unpacked, dict) and "output" in unpacked:
                item["output"] = unpacked["output"]
                if isinstance(unpacked.get("metadata"), dict):
                    self.outputs[str(item.get("call_id"))] = unpacked["metadata"]
        self.items.append(item)


def _finish(messages: list[Message], outputs: dict[str, dict[str, Any]]) -> list[Message]:
    """Exit codes onto tool messages, `cli_injected` onto injected context."""
    out = []
    for m in messages:
        extra: dict[str, Any] = {}
        if m.role == "tool" and m.tool_call_id in outputs:
            extra = dict(outputs[m.tool_call_id])
            if extra.get("exit_code") not in (None, 0):
                m = m.model_copy(update={"is_error": True})
        elif m.role == "user" and (m.content or "").lstrip().startswith(INJECTED):
            extra = {"cli_injected": True}
        if extra:
            base = m.meta.model_dump(exclude_none=True) if m.meta else {}
            m = m.model_copy(update={"meta": StepMeta(**{**base, **extra})})
        out.append(m)
    return out


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    records, errors = whole_file(src)
    yield from errors
    if not records:
        return
    r = _Rollout()
    for rec in records:
        if isinstance(rec.value, dict):
            r.add(rec.value)
    notes: Counter[str] = Counter()
    meta = r.meta
    instructions = meta.get("instructions") or meta.get("base_instructions")
    if isinstance(instructions, dict):
        instructions = instructions.get("text")
    messages = _finish(responses_messages(r.items, notes, instructions=instructions, path="response_item"),
                       r.outputs)
    messages, pending = mark_unanswered(messages)
    match = UUID.search(src.name or "")
    sid = meta.get("id") or (match.group(0) if match else content_hash(records[0].value))
    git = meta.get("git") if isinstance(meta.get("git"), dict) else {}
    yield build_trajectory(
        ctx, trajectory_id=stable_id(ctx.fmt, sid), messages=messages,
        original={"session_meta": {k: v for k, v in meta.items() if k not in ("instructions", "base_instructions")},
                  "compacted": r.compacted or None},
        agent="codex", agent_version=meta.get("cli_version"),
        model=r.models.most_common(1)[0][0] if r.models else None, session_id=sid,
        started_at=meta.get("timestamp") or first_time(r.times), ended_at=last_time(r.times), notes=notes,
        cwd=meta.get("cwd"), originator=meta.get("originator"), cli_version=meta.get("cli_version"),
        git_branch=git.get("branch"), git_commit=git.get("commit_hash"), git_repository=git.get("repository_url"),
        model_provider=meta.get("model_provider"), usage=r.usage, model_calls=r.events.get("turn_context"),
        events=dict(sorted(r.events.items())), unanswered_tool_calls=pending or None)
