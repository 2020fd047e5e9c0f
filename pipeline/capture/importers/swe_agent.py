"""SWE-agent `.traj` files, 1.x (function calling) and 0.x (legacy, actions parsed from text).

`history` is the conversation the model saw: 1.x assistant turns carry OpenAI `tool_calls` and tool
turns point back with a LIST `tool_call_ids`; 0.x has no calls at all (the action is text inside the
assistant message and the observation is a user turn), and is imported as such — inventing calls
would change what the model actually produced. SWE-agent bookkeeping per message (agent,
message_type, action, is_demo, a thought that differs from the content) is kept in `meta`.

Files are big (one observation can be a whole file listing), so `metadata.original` keeps only the
non-message parts: `info` (exit status, submission patch, model stats), `environment`,
`replay_config`, and the `trajectory[]` steps without their text fields that duplicate `history`.
The outcome is `info.exit_status` as a label (SWE-agent records no reward), with `has_submission`.
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
    build_outcome,
    build_trajectory,
    content_hash,
    loads_layers,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import chat_message, make_meta
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message

STEP_TEXT_FIELDS = {"response", "observation", "thought", "messages", "query"}
META_KEYS = ("agent", "message_type", "action", "is_demo")


def sniff(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("history"), list):
        return False
    steps = value.get("trajectory")
    first = value["history"][0] if value["history"] else {}
    return isinstance(steps, list) or (isinstance(first, dict) and ("agent" in first or "message_type" in first))


def _message(m: dict[str, Any], linker: CallLinker, notes: Counter[str]) -> Message:
    extra = {k: m[k] for k in META_KEYS if m.get(k) not in (None, "")}
    if m.get("thought") and m.get("thought") != m.get("content"):
        extra["thought"] = m["thought"]
    ids = m.get("tool_call_ids")
    if isinstance(ids, list) and len(ids) > 1:
        extra["tool_call_ids"] = ids
    meta = make_meta(**extra)
    d = dict(m)
    if m.get("role") == "tool" and isinstance(ids, list) and ids:
        d["tool_call_id"] = ids[0]
        for other in ids[1:]:  # one observation answering several calls: mark them answered too
            linker.result(other)
    msg = chat_message(d, linker, notes, meta=meta)
    blocks = m.get("thinking_blocks")
    if isinstance(blocks, list) and blocks and not msg.reasoning:
        text = "\n".join(str(b.get("thinking", "")) for b in blocks if isinstance(b, dict))
        msg = msg.model_copy(update={"reasoning": text or None})
    return msg


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        linker = CallLinker(notes)
        messages = []
        for i, m in enumerate(value["history"]):
            with at("history", i):
                if not isinstance(m, dict):
                    raise FieldError("", f"expected a message object, got {type(m).__name__}")
                messages.append(_message(m, linker, notes))
        with at("replay_config"):
            replay = loads_layers(value.get("replay_config")) or {}
            if not isinstance(replay, dict):
                raise FieldError("", "expected an object (or its JSON string)")
        agent_cfg = replay.get("agent") or {}
        problem = replay.get("problem_statement") or {}
        info = value.get("info") if isinstance(value.get("info"), dict) else {}
        legacy = not any(m.tool_calls for m in messages) and "replay_config" not in value
        original = {k: v for k, v in value.items() if k not in ("history", "trajectory")}
        if isinstance(value.get("trajectory"), list):
            original["trajectory"] = [{k: v for k, v in s.items() if k not in STEP_TEXT_FIELDS}
                                      for s in value["trajectory"] if isinstance(s, dict)]
        traj = build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, problem.get("id"), content_hash(value)), messages=messages,
            original=original, agent="swe-agent", agent_version=info.get("swe_agent_version"),
            model=(agent_cfg.get("model") or {}).get("name"), task_id=problem.get("id"), notes=notes,
            swe_agent_format="0.x" if legacy else "1.x", model_stats=info.get("model_stats"))
        yield traj
        if info.get("exit_status"):
            yield build_outcome(traj, "exit_status", label=str(info["exit_status"]), source="env",
                                has_submission=bool(info.get("submission")))

    return per_record(src.records(), one)
