"""Tool-call ids and arguments: the two things real exports get wrong most often.

* Ids: OpenAI fine-tuning files reuse the literal id `call_id` for every call, tau-bench reuses real
  ids across turns, ShareGPT/ToolBench have no ids at all. Downstream joins need ids unique within a
  trajectory, so `CallLinker` renames repeats (`call_id`, `call_id_2`, …) and generates `call_N` when
  there are none — while linking each tool result to the right call: the oldest still-unanswered call
  with the same source id (or the same tool name when results carry no id).
* Arguments: stored as a JSON string of ONE level. Objects are encoded; a JSON string that contains
  another JSON document (double encoding) is unwrapped; text that is not JSON is kept verbatim (it is
  what the model produced) and counted in the notes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from pipeline.capture.importers.base import dumps


def decode_arguments(value: Any, notes: Counter[str] | None = None) -> str:
    """Normalise tool-call arguments to a single-level JSON string (see module docstring)."""
    if value is None or value == "":
        return "{}"
    if not isinstance(value, str):
        return dumps(value)
    text = value
    for _ in range(3):
        try:
            decoded = orjson.loads(text)
        except orjson.JSONDecodeError:
            if notes is not None and text is value:
                notes["arguments_not_json"] += 1
            return text
        if not isinstance(decoded, str):
            return text
        try:
            inner = orjson.loads(decoded)
        except orjson.JSONDecodeError:
            return text  # a plain JSON string argument: already one level
        if not isinstance(inner, dict | list | str):
            return text
        if notes is not None:
            notes["double_encoded_arguments"] += 1
        text = decoded
    return text


class CallLinker:
    """Assigns unique call ids within one trajectory and resolves tool results to them."""

    def __init__(self, notes: Counter[str] | None = None):
        self.notes: Counter[str] = notes if notes is not None else Counter()
        self._used: set[str] = set()
        self._pending: list[tuple[str | None, str | None, str]] = []  # (source id, name, unique id)
        self._last: dict[str, str] = {}
        self._count = 0

    def call(self, source_id: Any, name: str | None) -> str:
        """Register a call; returns the id to store (the source id unless it was already used)."""
        sid = str(source_id) if source_id not in (None, "") else None
        base = sid or f"call_{self._count}"
        self._count += 1
        uid, n = base, 2
        while uid in self._used:
            uid, n = f"{base}_{n}", n + 1
        if sid is not None and uid != sid:
            self.notes["renamed_call_ids"] += 1
        elif sid is None:
            self.notes["generated_call_ids"] += 1
        self._used.add(uid)
        self._pending.append((sid, name, uid))
        if sid is not None:
            self._last[sid] = uid
        return uid

    def result(self, source_id: Any = None, name: str | None = None) -> str | None:
        """The unique id of the call a tool result answers (oldest unanswered match first)."""
        sid = str(source_id) if source_id not in (None, "") else None
        if sid is not None:
            for i, (s, _, _uid) in enumerate(self._pending):
                if s == sid:
                    return self._pending.pop(i)[2]
            if sid in self._last:
                self.notes["repeated_tool_results"] += 1
                return self._last[sid]
            self.notes["orphan_tool_results"] += 1
            return sid
        for i, (_, n, _uid) in enumerate(self._pending):
            if name is None or n == name:
                return self._pending.pop(i)[2]
        if self._pending and name is not None:
            self.notes["tool_results_linked_by_order"] += 1
            return self._pending.pop(0)[2]
        self.notes["orphan_tool_results"] += 1
        return None

    @property
    def unanswered(self) -> int:
        return len(self._pending)
