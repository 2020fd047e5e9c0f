"""Rebuilding conversations from traced model calls (Langfuse generations, OTel chat spans).

A trace records each model call with its full input and its output; the conversation is not stored
anywhere as such. Calls are replayed in time order: a call whose input *extends* an existing thread
(the thread's messages are a prefix of its input) continues that thread — new input messages (tool
results, the next user turn) and then its output are appended, and the earlier messages keep the
per-step `meta` they got as outputs. A call that extends no thread starts a new one: that is a
sub-agent or a separate agent run inside the same trace (pydantic-ai's evaluator agent, for one),
which becomes its own trajectory rather than being spliced into the main conversation.

Tool executions traced separately (Langfuse TOOL observations, `execute_tool` spans) answer calls
that no later model input shows; they are inserted right after the calling turn, and a failed
execution marks the matching tool message `is_error`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from pipeline.capture.importers.calls import CallLinker
from pipeline.schema import Message


@dataclass
class Step:
    """One model call: input messages, output messages (last one carries the step meta)."""

    input: list[Message]
    output: list[Message]
    start: datetime | None = None
    end: datetime | None = None
    ref: str | None = None  # observation / span id
    agent: str | None = None
    model: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ToolRun:
    """A traced tool execution."""

    call_id: str | None
    name: str | None
    result: Any
    is_error: bool = False
    start: datetime | None = None
    arguments: Any = None


@dataclass
class Thread:
    messages: list[Message] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def tools(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for s in self.steps:
            for t in s.tools:
                name = (t.get("function") or t).get("name")
                seen.setdefault(str(name), t)
        return list(seen.values())


def _args(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments


def key(m: Message) -> tuple[Any, ...]:
    """What makes two renderings of a message the same turn (meta and empty-vs-None text ignored)."""
    calls = tuple((c.id, c.name, orjson.dumps(_args(c.arguments), option=orjson.OPT_SORT_KEYS))
                  for c in m.tool_calls)
    return (m.role, (m.content or "").strip(), (m.reasoning or "").strip(), calls, m.tool_call_id)


def _split_system(msgs: list[Message]) -> tuple[list[Message], list[Message]]:
    n = 0
    while n < len(msgs) and msgs[n].role == "system":
        n += 1
    return msgs[:n], msgs[n:]


def merge(steps: list[Step]) -> list[Thread]:
    """Group model calls into conversation threads (see module docstring). Leading system messages
    are compared apart: a call logged without its system instructions still continues its thread,
    while two calls with different system prompts never share one."""
    threads: list[Thread] = []
    for step in sorted(steps, key=lambda s: (s.start is None, s.start or datetime.min, s.ref or "")):
        sys_in, rest_in = _split_system(step.input)
        keys = [key(m) for m in rest_in]
        best: Thread | None = None
        best_len = -1
        for t in threads:
            sys_t, rest_t = _split_system(t.messages)
            if sys_in and [key(m) for m in sys_in] != [key(m) for m in sys_t]:
                continue
            n = len(rest_t)
            if n <= len(keys) and [key(m) for m in rest_t] == keys[:n] and n > best_len:
                best, best_len = t, n
        if best is None:
            best = Thread(messages=list(sys_in))
            threads.append(best)
            best_len = 0
        best.messages.extend(rest_in[best_len:])
        best.messages.extend(step.output)
        best.steps.append(step)
    return threads


def attach_tool_runs(thread: Thread, runs: list[ToolRun]) -> list[ToolRun]:
    """Mark errors on answered calls and insert results for unanswered ones; returns unused runs.
    A run matches a call by call id, or (runs without one, e.g. OpenInference) by tool name."""
    names = {c.id: c.name for m in thread.messages for c in m.tool_calls}
    by_id = {r.call_id: r for r in runs if r.call_id}
    used: set[int] = set()

    def find(call_id: str | None, name: str | None) -> ToolRun | None:
        run = by_id.get(call_id) if call_id else None
        if run is None:
            run = next((r for r in runs if not r.call_id and id(r) not in used and r.name == name), None)
        if run is not None and id(run) not in used:
            used.add(id(run))
            return run
        return None

    answered = set()
    for i, m in enumerate(thread.messages):
        if m.role == "tool":
            answered.add(m.tool_call_id)
            run = find(m.tool_call_id, names.get(m.tool_call_id or "") or m.name)
            if run is not None and run.is_error and not m.is_error:
                thread.messages[i] = m.model_copy(update={"is_error": True})
    i = 0
    while i < len(thread.messages):
        at = i + 1
        while at < len(thread.messages) and thread.messages[at].role == "tool":
            at += 1
        for call in thread.messages[i].tool_calls:
            run = None if call.id in answered else find(call.id, call.name)
            if run is None:
                continue
            result = run.result if isinstance(run.result, str) or run.result is None else orjson.dumps(
                run.result, default=str).decode()
            thread.messages.insert(at, Message(role="tool", tool_call_id=call.id, name=call.name, content=result,
                                               is_error=run.is_error))
            thread.notes["tool_results_from_tool_spans"] += 1
            at += 1
        i += 1
    return [r for r in runs if id(r) not in used]


def relink(messages: list[Message], notes: Counter[str]) -> list[Message]:
    """Make call ids unique across the whole merged thread (each step was linked on its own)."""
    linker = CallLinker(notes)
    out = []
    for m in messages:
        if m.tool_calls:
            calls = [c.model_copy(update={"id": linker.call(c.id, c.name)}) for c in m.tool_calls]
            m = m.model_copy(update={"tool_calls": calls})
        elif m.role == "tool":
            m = m.model_copy(update={"tool_call_id": linker.result(m.tool_call_id, m.name)})
        out.append(m)
    return out
