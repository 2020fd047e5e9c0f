"""Shared machinery of the coding-agent importers (Claude Code, Codex, Gemini CLI, OpenHands, …).

These formats differ from the dataset formats in three ways that every one of their importers meets:

* The unit is a *session file*, not a record: one conversation is spread over many lines (or events)
  that must be read together, so `whole_file` reads every record once and reports bad lines as
  `RecordError`s instead of stopping.
* Images arrive inline as base64 (a pasted screenshot, a browser tool's capture). Base64 in message
  text would bloat every corpus row and teach the model nothing, so `image_placeholder` turns an image
  into a short `[image: image/png, 12345 bytes]` text plus a `{type: image, media_type, size_bytes}`
  part for `meta.parts`; the bytes themselves are dropped.
* A session can end mid-turn (the file is still being written, or the agent was killed), leaving tool
  calls without results. They are kept, and `unanswered_calls` names them so the trajectory says so.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

from pipeline.capture.importers.base import RecordError
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message, StepMeta

DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?(?:;[\w=.-]+)*;base64,(?P<data>.*)$", re.DOTALL)


def whole_file(src: Source) -> tuple[list[Record], list[RecordError]]:
    """Every parsable record of a session file, and one `RecordError` per unparsable line."""
    good: list[Record] = []
    bad: list[RecordError] = []
    for rec in src.records():
        if rec.error is not None:
            bad.append(RecordError(rec.index, rec.line, "", rec.error))
        else:
            good.append(rec)
    return good, bad


def base64_size(data: str) -> int:
    """Decoded size of a base64 payload, without decoding all of it when it is well formed."""
    data = data.strip()
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return len(data) * 3 // 4


def image_placeholder(media_type: str | None, data: str | None = None, *, url: str | None = None,
                      size_bytes: int | None = None) -> tuple[str, dict[str, Any]]:
    """Text standing in for an image and the part that describes it (see the module docstring).
    A `data:` URL is taken apart; any other URL is kept (it is a reference, not the bytes)."""
    if url and (m := DATA_URL.match(url)):
        media_type, data, url = media_type or m.group("media"), m.group("data"), None
    if size_bytes is None and data:
        size_bytes = base64_size(data)
    part: dict[str, Any] = {"type": "image", "media_type": media_type or "unknown"}
    if size_bytes is not None:
        part["size_bytes"] = size_bytes
    if url:
        part["url"] = url
    size = f", {size_bytes} bytes" if size_bytes is not None else ""
    return f"[image: {part['media_type']}{size}]", part


def unanswered_calls(messages: Sequence[Message]) -> list[str]:
    """Ids of tool calls that no tool message answers (a session cut off mid-turn)."""
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    return [c.id for m in messages for c in m.tool_calls if c.id not in answered]


def mark_unanswered(messages: Sequence[Message]) -> tuple[list[Message], list[str]]:
    """The messages, with `meta.unanswered_tool_calls` on each assistant turn whose calls got no
    result, and the ids of all such calls (for the trajectory's metadata)."""
    pending = set(unanswered_calls(messages))
    out = []
    for m in messages:
        ids = [c.id for c in m.tool_calls if c.id in pending]
        if ids:
            base = m.meta.model_dump(exclude_none=True) if m.meta else {}
            m = m.model_copy(update={"meta": StepMeta(**{**base, "unanswered_tool_calls": ids})})
        out.append(m)
    return out, [c.id for m in messages for c in m.tool_calls if c.id in pending]


def first_time(values: Sequence[Any]) -> Any:
    """The first non-empty timestamp of a sequence (sources put None on bookkeeping records)."""
    return next((v for v in values if v not in (None, "")), None)


def last_time(values: Sequence[Any]) -> Any:
    return first_time(list(reversed(values)))
