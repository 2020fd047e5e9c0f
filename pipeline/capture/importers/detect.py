"""Format detection from content (never from the file extension alone).

`detect_format` looks at the first record — the whole document for JSON, the first parsable line
for JSON Lines — and asks each registered format in priority order. Files that are recognisably
*not* trajectories (JSON Schemas, ToolBench instruction queries, bare tool-definition lists) get a
specific reason instead of a generic "unknown format".
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.capture.importers.registry import FORMATS
from pipeline.capture.importers.source import Source


class UnknownFormatError(ValueError):
    """The content matches no registered format; the message says what was seen."""


def _why_not(value: Any) -> str:
    sample = value[0] if isinstance(value, list) and value else value
    if isinstance(value, str):
        return "text that is not JSON, JSON Lines or a known text format (aider chat history)"
    if isinstance(value, dict) and ("$schema" in value or "$defs" in value):
        return "a JSON Schema document, not trajectories"
    if isinstance(sample, dict) and "api_list" in sample and "query" in sample:
        return "ToolBench instruction queries: tasks, not trajectories"
    if isinstance(sample, dict) and sample.get("type") == "function" and "role" not in sample:
        return "a list of tool definitions, not a conversation"
    if isinstance(sample, dict) and sample.get("type") == "text" and "content" in sample and "role" not in sample:
        return "message parts without roles (e.g. gen_ai.system_instructions), not a conversation"
    keys = sorted(sample)[:12] if isinstance(sample, dict) else type(sample).__name__
    return f"no registered format matches (first record: {keys})"


def detect_value(value: Any) -> str:
    """The whole value is tried first (a bare message list is one conversation), then, for an
    array of records, its first record."""
    candidates = [value]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        candidates.append(value[0])
    for candidate in candidates:
        for fmt in FORMATS.values():
            try:
                if fmt.sniff(candidate):
                    return fmt.name
            except (TypeError, AttributeError, KeyError, IndexError):
                continue
    raise UnknownFormatError(_why_not(value))


def detect_format(path_or_obj: str | os.PathLike | Source | Any) -> str:
    """The format name of a file path, an opened `Source`, or an already-parsed JSON value."""
    if isinstance(path_or_obj, str | os.PathLike):
        src = Source.open(path_or_obj)
    elif isinstance(path_or_obj, Source):
        src = path_or_obj
    else:
        return detect_value(path_or_obj)
    try:
        return detect_value(src.first_value())
    except UnknownFormatError as exc:
        raise UnknownFormatError(f"{src.name or 'input'}: {exc}") from None
