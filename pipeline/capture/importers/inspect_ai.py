"""Inspect AI eval logs, JSON flavour (log format version 2): `{version, status, eval, plan, results,
stats, samples[], reductions}`. Each sample is one trajectory; its scores are outcomes.

Sample messages are chat messages with Inspect's spelling: a call is `{id, function: <name>, arguments:
<object>}` (the name where OpenAI puts an object), a tool message names its call in `tool_call_id` and its
tool in `function` and reports failure as an `error` object; content is a string or typed parts (`text`,
`reasoning` → reasoning, `image` data URLs → placeholders). They are respelled and converted with the
shared chat converter. Messages carry no timestamps; the sample's first event gives its start.

Scores → outcomes named after the scorer: numbers as values, Inspect's letter grades as labels with
their conventional value (C=1, P=0.5, I=0, N=0) so `--filter 'includes = 1'` works, dict scores as one
outcome per key. A bad sample becomes one record error naming `samples.N`; the others still import.
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
    isolated,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import chat_messages
from pipeline.capture.importers.sessions import first_time, image_placeholder, mark_unanswered
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Trajectory

GRADES = {"C": 1.0, "P": 0.5, "I": 0.0, "N": 0.0}


def sniff(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("eval"), dict) and "samples" in value and (
        "version" in value and "plan" in value)


def _respell(m: dict[str, Any]) -> dict[str, Any]:
    """One Inspect message in the OpenAI chat spelling the shared converter reads."""
    d = dict(m)
    content, reasoning = m.get("content"), []
    if isinstance(content, list):
        parts: list[Any] = []
        for p in content:
            kind = p.get("type") if isinstance(p, dict) else None
            if kind == "reasoning":
                reasoning.append(str(p.get("reasoning") or ""))
            elif kind == "image":
                text, part = image_placeholder(None, url=p.get("image"))
                parts += [{"type": "text", "text": text}, part]
            else:
                parts.append(p)
        d["content"] = parts
    if reasoning:
        d["reasoning"] = "\n".join(reasoning)
    if m.get("tool_calls"):
        d["tool_calls"] = [{"id": c.get("id"), "name": c.get("function"), "arguments": c.get("arguments")}
                           for c in m["tool_calls"]]
    if m.get("role") == "tool":
        d["name"] = m.get("function")
        d["is_error"] = bool(m.get("error"))
        d.pop("error", None)
    return d


def _outcomes(traj: Trajectory, scores: dict[str, Any]) -> Iterator[Item]:
    for scorer, score in scores.items():
        value = score.get("value") if isinstance(score, dict) else score
        flat = value if isinstance(value, dict) else {"": value}
        for key, v in flat.items():
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join(p for p in (scorer, str(key)) if p))
            name = name if re.match(r"[A-Za-z_]", name) else f"score_{name}"
            if isinstance(v, int | float):  # bools too: pass/fail
                yield build_outcome(traj, name, float(v), source="judge")
            elif v is not None:
                yield build_outcome(traj, name, GRADES.get(str(v)), label=str(v), source="judge",
                                    answer=score.get("answer") if isinstance(score, dict) else None)


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        ev = value["eval"]
        for i, sample in enumerate(value.get("samples") or []):
            yield from isolated(rec, f"samples.{i}", lambda s=sample: _sample(ctx, ev, s))

    return per_record(src.records(), one)


def _sample(ctx: Context, ev: dict[str, Any], s: dict[str, Any]) -> Iterator[Item]:
    notes: Counter[str] = Counter()
    messages = chat_messages([_respell(m) for m in s.get("messages") or []], CallLinker(notes), notes)
    messages, pending = mark_unanswered(messages)
    times = [e.get("timestamp") for e in s.get("events") or [] if isinstance(e, dict)]
    traj = build_trajectory(
        ctx, trajectory_id=stable_id(ctx.fmt, ev.get("eval_id"), s.get("id"), s.get("epoch")), messages=messages,
        original={k: v for k, v in s.items() if k not in ("messages", "events", "attachments")},
        agent="inspect-ai", agent_version=(ev.get("packages") or {}).get("inspect_ai"), model=ev.get("model"),
        task_id=f"{ev.get('task')}/{s.get('id')}", session_id=ev.get("run_id"),
        started_at=first_time(times) or ev.get("created"), notes=notes, eval_id=ev.get("eval_id"),
        task=ev.get("task"), epoch=s.get("epoch"), model_usage=s.get("model_usage"),
        unanswered_tool_calls=pending or None)
    yield traj
    yield from _outcomes(traj, s.get("scores") or {})
