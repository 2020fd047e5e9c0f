"""mini-swe-agent trajectories: a bare list of `{role, content}` messages (`agent.messages`), or the
saved form `{info, messages, trajectory_format: "mini-swe-agent-1.x"}`.

The agent's action is a fenced ```` ```mswea_bash_command ```` (older versions: ```` ```bash ````) block
inside an assistant message, and its result is the NEXT user message (`<returncode>N</returncode>
<output>…`): the link is positional. Each action becomes a `bash` tool call on that assistant turn
(its text is kept as written) and the observation becomes the tool message answering it, so the
trajectory has the tool structure a chat template expects. The final `echo
COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` action is a call like the others; its observation is the
submission. `info.exit_status` (saved form) becomes an outcome label.

Detection needs the action block (or the saved form's `trajectory_format`): without it a message list
is plain OpenAI chat.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    Item,
    build_outcome,
    build_trajectory,
    content_hash,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import chat_message
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message, ToolCall

ACTION = re.compile(r"```(?:mswea_bash_command|bash)\s*\n(.*?)\n```", re.DOTALL)


def _messages(value: Any) -> Any:
    return value.get("messages") if isinstance(value, dict) else value


def sniff(value: Any) -> bool:
    if isinstance(value, dict) and str(value.get("trajectory_format", "")).startswith("mini-swe-agent"):
        return True
    msgs = _messages(value)
    return isinstance(msgs, list) and bool(msgs) and all(isinstance(m, dict) and "role" in m for m in msgs) and any(
        m.get("role") == "assistant" and "```mswea_bash_command" in str(m.get("content")) for m in msgs)


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        linker = CallLinker(notes)
        out: list[Message] = []
        waiting: str | None = None
        for m in _messages(value):
            msg = chat_message(m, linker, notes)
            if waiting is not None and msg.role == "user":
                msg = Message(role="tool", content=msg.content, name="bash", tool_call_id=linker.result(waiting))
            waiting = None
            action = ACTION.search(msg.content or "") if msg.role == "assistant" else None
            if action:
                waiting = linker.call(None, "bash")
                call = ToolCall(id=waiting, name="bash", arguments={"command": action.group(1)})
                msg = msg.model_copy(update={"tool_calls": [call]})
            out.append(msg)
        info = value.get("info") if isinstance(value, dict) and isinstance(value.get("info"), dict) else {}
        traj = build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, content_hash(value)), messages=out,
            original={k: v for k, v in value.items() if k != "messages"} if isinstance(value, dict) else None,
            agent="mini-swe-agent", agent_version=info.get("mini_version"),
            model=((info.get("config") or {}).get("model") or {}).get("model_name"), notes=notes,
            model_stats=info.get("model_stats"), unanswered_tool_calls=[waiting] if waiting else None)
        yield traj
        if info.get("exit_status"):
            yield build_outcome(traj, "exit_status", label=str(info["exit_status"]),
                                has_submission=bool(info.get("submission")))

    return per_record(src.conversations(), one)
