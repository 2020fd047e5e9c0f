"""LangSmith run payloads: what the SDK sends to `/runs` (`{"post": [run], "patch": [run]}`), or a
list of runs as fetched from the API. Runs → trajectories (one per trace, from its root run); feedback
(`{"feedback": [{run_id, key, score, value}]}`) → outcomes.

A patch completes its post: matched by `id`, or, when the JS SDK leaves `id` out of the patch, by
`dotted_order` / `trace_id`. A trace's conversation is its LLM run's `inputs.messages` followed by the
reply in `outputs.choices[0].message` (OpenAI spelling, converted by the shared chat converter); for a
chain whose children are LLM runs, the last LLM run of the trace is the conversation. JS times are
epoch milliseconds, Python's ISO strings; both are parsed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    Item,
    build_outcome,
    build_trajectory,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import chat_messages, make_meta
from pipeline.capture.importers.source import Record, Source


def _is_run(r: Any) -> bool:
    return isinstance(r, dict) and "run_type" in r and ("trace_id" in r or "dotted_order" in r)


def sniff(value: Any) -> bool:
    if isinstance(value, dict) and isinstance(value.get("post"), list):
        return any(_is_run(r) for r in value["post"])
    return isinstance(value, list) and bool(value) and _is_run(value[0])


def merged_runs(value: Any) -> list[dict[str, Any]]:
    """Posts completed by their patches (matched by id, else dotted_order, else trace id)."""
    posts = value.get("post") or [] if isinstance(value, dict) else value
    runs = [dict(r) for r in posts if _is_run(r)]
    for patch in (value.get("patch") or []) if isinstance(value, dict) else []:
        for key in ("id", "dotted_order", "trace_id"):
            target = next((r for r in runs if patch.get(key) and r.get(key) == patch[key]), None)
            if target is not None:
                target.update({k: v for k, v in patch.items() if v is not None})
                break
    return runs


def _reply(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    choices = outputs.get("choices") or []
    if choices and isinstance(choices[0].get("message"), dict):
        return [choices[0]["message"]]
    return [m for m in outputs.get("messages") or [] if isinstance(m, dict)][-1:]


def _trace(ctx: Context, trace: list[dict[str, Any]]) -> Any:
    root = next((r for r in trace if not r.get("parent_run_id")), trace[0])
    llm = [r for r in trace if r.get("run_type") == "llm"] or [root]
    run = llm[-1]
    inputs, outputs = run.get("inputs") or {}, run.get("outputs") or {}
    notes: Counter[str] = Counter()
    linker = CallLinker(notes)
    model = ((run.get("extra") or {}).get("metadata") or {}).get("ls_model_name") or inputs.get("model")
    usage = outputs.get("usage_metadata") or outputs.get("usage")
    reply = chat_messages(_reply(outputs), linker, notes, path="outputs",
                          meta=make_meta(model=outputs.get("model") or model, usage=usage,
                                         timestamp=run.get("end_time")))
    messages = chat_messages(inputs.get("messages") or [], linker, notes, path="inputs.messages") + reply
    return build_trajectory(
        ctx, trajectory_id=stable_id(ctx.fmt, root.get("trace_id") or root.get("id")), messages=messages,
        original={"runs": [{k: v for k, v in r.items() if k not in ("inputs", "outputs")} for r in trace]},
        agent="langsmith", agent_version=((run.get("extra") or {}).get("runtime") or {}).get("sdk_version"),
        model=model, session_id=root.get("session_name"), started_at=root.get("start_time"),
        ended_at=root.get("end_time"), notes=notes, run_name=root.get("name"), tags=root.get("tags") or None)


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        traces: dict[str, list[dict[str, Any]]] = {}
        for r in merged_runs(value):
            traces.setdefault(str(r.get("trace_id") or r.get("id")), []).append(r)
        by_run: dict[str, Any] = {}
        for trace in traces.values():
            traj = _trace(ctx, trace)
            by_run.update({str(r.get("id")): traj for r in trace if r.get("id")})
            yield traj
        for fb in (value.get("feedback") or []) if isinstance(value, dict) else []:
            traj = by_run.get(str(fb.get("run_id")))
            if traj is not None:
                yield build_outcome(traj, str(fb.get("key") or "feedback"), fb.get("score"),
                                    label=None if fb.get("value") is None else str(fb["value"]),
                                    source="human", recorded_at=fb.get("created_at"), comment=fb.get("comment"))

    return per_record(src.records(), one)
