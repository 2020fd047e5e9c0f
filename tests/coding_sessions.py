"""Synthetic Claude Code and Codex session trees for the watch and coding-grader tests.

Records follow the layouts documented in shared/fixtures/coding_agents/README.md (one record per
line; Claude Code `user`/`assistant` records with `sessionId`, `uuid`, `message`; Codex envelopes
`{timestamp, type, payload}` with a `session_meta` first). Every message record here becomes exactly
one message, so the expected count of a session is the number of message lines written so far.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DAY = "2026-03-02"


def ts(i: int) -> str:
    return f"{DAY}T10:{i // 60 % 60:02d}:{i % 60:02d}.000Z"


def claude_user(sid: str, i: int, content: Any) -> dict[str, Any]:
    return {"type": "user", "sessionId": sid, "uuid": f"{sid}-u{i}", "parentUuid": f"{sid}-a{i - 1}" if i else None,
            "timestamp": ts(i), "cwd": "/work/proj", "version": "2.1.14", "gitBranch": "main",
            "message": {"role": "user", "content": content}}


def claude_assistant(sid: str, i: int, blocks: list[dict[str, Any]], *, tokens: tuple[int, int] = (100, 20),
                     stop: str | None = "end_turn") -> dict[str, Any]:
    return {"type": "assistant", "sessionId": sid, "uuid": f"{sid}-a{i}", "parentUuid": f"{sid}-u{i}",
            "timestamp": ts(i), "cwd": "/work/proj", "version": "2.1.14", "requestId": f"req-{sid}-{i}",
            "message": {"id": f"msg-{sid}-{i}", "role": "assistant", "model": "claude-sonnet-4-5",
                        "content": blocks, "stop_reason": stop,
                        "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}}


def claude_text_turn(sid: str, i: int) -> dict[str, Any]:
    """The i-th message line of a plain chat session: user on even i, assistant on odd i."""
    if i % 2 == 0:
        return claude_user(sid, i, f"question {i} of {sid}")
    return claude_assistant(sid, i, [{"type": "text", "text": f"answer {i} of {sid}"}])


def codex_line(sid: str, i: int) -> dict[str, Any]:
    """Line 0 is the session_meta; then user and assistant messages alternate."""
    if i == 0:
        return {"timestamp": ts(0), "type": "session_meta",
                "payload": {"id": sid, "timestamp": ts(0), "cwd": "/work/proj", "cli_version": "0.40.0"}}
    role, kind = ("user", "input_text") if i % 2 else ("assistant", "output_text")
    return {"timestamp": ts(i), "type": "response_item",
            "payload": {"type": "message", "role": role, "content": [{"type": kind, "text": f"{role} {i} {sid}"}]}}


def write_lines(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append whole lines in one write, as the agents do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))


def session_ids(n: int, seed: str) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}-{i}")) for i in range(n)]
