"""ToolBench DFS answer trees (ToolLLaMA data generation output).

`answer_generation.train_messages` is a list of growing prefixes of the chosen chain (one training
sample per assistant step); the last one is the full trajectory. Messages use the legacy OpenAI form
(`function_call{name, arguments}` and `role: function` results) with no ids, so ids are generated and
results link by function name. `Finish` is a pseudo-function that ends the run: it is kept as the
final tool call (it is what the model emitted, and the tool list declares it) and its parsed
`final_answer` / `return_type` go to metadata. An observation `{"error": "...", "response": ...}`
with a non-empty error is a tool error. Outcomes: `win` (0/1) and `finish_type` (give_answer |
give_up) as a label. The search `tree` stays in `metadata.original` (alternative branches).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson

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


def sniff(value: Any) -> bool:
    sample = value[0] if isinstance(value, list) and value else value
    return isinstance(sample, dict) and isinstance(sample.get("answer_generation"), dict)


def _tool_error(content: Any) -> bool:
    try:
        parsed = orjson.loads(content) if isinstance(content, str) else content
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and bool(parsed.get("error"))


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        gen = value["answer_generation"]
        samples = gen.get("train_messages") or []
        if not samples or not isinstance(samples[-1], list):
            raise FieldError("answer_generation.train_messages", "no message chain to import")
        full = samples[-1]
        notes: Counter[str] = Counter()
        if any(s != full[: len(s)] for s in samples):
            notes["train_messages_not_prefixes"] += 1
        linker = CallLinker(notes)
        messages = []
        for i, m in enumerate(full):
            with at("answer_generation.train_messages", len(samples) - 1, i):
                meta = make_meta(valid=m.get("valid")) if "valid" in m else None
                msg = chat_message(m, linker, notes, meta=meta)
                if msg.role == "tool" and _tool_error(m.get("content")):
                    msg = msg.model_copy(update={"is_error": True})
                messages.append(msg)
        final = loads_layers(gen.get("final_answer"))
        original = {**value, "answer_generation": {k: v for k, v in gen.items() if k != "train_messages"}}
        if notes["train_messages_not_prefixes"]:
            original = value
        query = gen.get("query")
        traj = build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, content_hash(value)), messages=messages, original=original,
            agent="toolbench-dfs", task_id=stable_id(ctx.fmt, content_hash(query, 12)) if query else None,
            tools=gen.get("function") or [], notes=notes, query=query,
            final_answer=final if isinstance(final, dict) else gen.get("final_answer"),
            total_tokens=gen.get("total_tokens"), query_count=gen.get("query_count"))
        yield traj
        if "win" in value:
            yield build_outcome(traj, "win", bool(value["win"]), source="env")
        if gen.get("finish_type"):
            yield build_outcome(traj, "finish_type", label=str(gen["finish_type"]), source="env")

    return per_record(src.records(), one)
