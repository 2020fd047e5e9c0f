"""Langfuse trace exports: `{trace, observations[]}` (UI download merged with observations), or an API
trace object with `observations` inside.

The conversation is rebuilt from GENERATION observations (see `threads`); their `input`/`output`
keep the producer's shape, so each is normalised by dialect: OpenAI/LangChain chat messages, OTel
`parts` (pydantic-ai), Responses items / Response objects (OpenAI Agents), or flattened text
(AutoGen's `"system: …\\nuser: …"`). LangChain's integration appends the tool *definitions* to the
input as fake `role: tool` messages without a call id: those are moved to `tools`. Trace `input`,
`output` and `metadata` are JSON strings (sometimes twice encoded) and are decoded. Each extra thread
(a sub-agent) is its own trajectory `langfuse:<trace>:<n>`. Scores become outcomes on the trajectory
they target (the one holding `observationId`, else the trace's main one), with the score's own time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    Item,
    as_text,
    at,
    build_outcome,
    build_trajectory,
    loads_layers,
    parse_time,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import chat_message, make_meta, parse_display
from pipeline.capture.importers.openai import RESPONSE_ITEM_TYPES, responses_messages
from pipeline.capture.importers.parts import Assembler, otel_message
from pipeline.capture.importers.source import Record, Source
from pipeline.capture.importers.threads import Step, ToolRun, attach_tool_runs, merge, relink
from pipeline.schema import Message, StepMeta

SCORE_SOURCES = {"EVAL": "judge", "ANNOTATION": "human", "API": "api"}


def sniff(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("trace"), dict) and isinstance(value.get("observations"), list):
        return True
    return isinstance(value.get("observations"), list) and "id" in value and "timestamp" in value


def _is_tool_definition(m: Any) -> bool:
    content = m.get("content") if isinstance(m, dict) else None
    return (isinstance(m, dict) and m.get("role") == "tool" and not m.get("tool_call_id")
            and isinstance(content, dict) and content.get("type") == "function")


def messages_of(raw: Any, notes: Counter[str], *, output: bool, meta: StepMeta | None = None,
                tools: list[dict[str, Any]] | None = None) -> list[Message]:
    """Normalise a generation's input or output, whatever producer wrote it."""
    raw = loads_layers(raw)
    linker = CallLinker(notes)
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            msgs = parse_display(raw)
        except ValueError:
            msgs = [Message(role="assistant" if output else "user", content=raw)]
        if meta is not None and msgs:
            msgs[-1] = msgs[-1].model_copy(update={"meta": meta})
        return msgs
    if isinstance(raw, dict):
        if raw.get("object") == "response" or isinstance(raw.get("output"), list):
            if tools is not None:
                tools.extend(t for t in raw.get("tools") or [] if isinstance(t, dict) and t.get("name"))
            return responses_messages([], notes, output=raw.get("output"), output_meta=meta)
        if isinstance(raw.get("messages"), list):
            return messages_of(raw["messages"], notes, output=output, meta=meta, tools=tools)
        if "role" in raw or "parts" in raw:
            raw = [raw]
        else:
            return [Message(role="assistant" if output else "user", content=as_text(raw), meta=meta)]
    if not isinstance(raw, list):
        return [Message(role="assistant" if output else "user", content=as_text(raw), meta=meta)]
    if raw and all(isinstance(m, dict) and "parts" in m for m in raw):
        asm = Assembler(linker, notes)
        for i, m in enumerate(raw):
            with at(i):
                otel_message(asm, m, meta if i == len(raw) - 1 else None)
        return asm.messages
    if any(isinstance(m, dict) and (m.get("type") in RESPONSE_ITEM_TYPES or "call_id" in m) for m in raw):
        msgs = responses_messages(raw, notes, path="")
    else:
        msgs = []
        for i, m in enumerate(raw):
            if _is_tool_definition(m):
                if tools is not None:
                    tools.append(m["content"])
                notes["tool_definitions_in_messages"] += 1
                continue
            with at(i):
                msgs.append(chat_message(m, linker, notes))
    if meta is not None and msgs:
        last = msgs[-1]
        merged = {**(last.meta.model_dump(exclude_none=True) if last.meta else {}), **meta.model_dump(exclude_none=True)}
        msgs[-1] = last.model_copy(update={"meta": StepMeta(**merged)})
    return msgs


def _attributes(obs: dict[str, Any]) -> dict[str, Any]:
    meta = loads_layers(obs.get("metadata"))
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def _step(obs: dict[str, Any], names: dict[str, str], notes: Counter[str]) -> Step:
    cost = (obs.get("costDetails") or {}).get("total", obs.get("totalCost"))
    attrs = _attributes(obs)
    finish = attrs.get("gen_ai.response.finish_reasons")
    meta = make_meta(timestamp=obs.get("startTime"), model=obs.get("model"), usage=obs.get("usageDetails"),
                     latency_ms=obs.get("latency"), cost_usd=cost or None, observation_id=obs.get("id"),
                     finish_reason=finish[0] if isinstance(finish, list) and finish else None)
    tools: list[dict[str, Any]] = []
    params = attrs.get("model_request_parameters") or {}
    for t in (params.get("function_tools") or []) + (params.get("output_tools") or []):
        tools.append({"name": t.get("name"), "description": t.get("description"),
                      "parameters": t.get("parameters_json_schema")})
    with at("input"):
        inp = messages_of(obs.get("input"), notes, output=False, tools=tools)
    with at("output"):
        out = messages_of(obs.get("output"), notes, output=True, meta=meta, tools=tools)
    raw_out = loads_layers(obs.get("output"))
    instructions = raw_out.get("instructions") if isinstance(raw_out, dict) else None
    if isinstance(instructions, str) and instructions and not (inp and inp[0].role == "system"):
        inp.insert(0, Message(role="system", content=instructions))  # Responses API: sent beside input
    return Step(input=inp, output=out, start=parse_time(obs.get("startTime")), end=parse_time(obs.get("endTime")),
                ref=obs.get("id"), agent=names.get(obs.get("parentObservationId") or ""), model=obs.get("model"),
                tools=tools)


def _tool_run(obs: dict[str, Any]) -> ToolRun:
    attrs = _attributes(obs)
    name = attrs.get("gen_ai.tool.name") or attrs.get("tool.name") or obs.get("name")
    return ToolRun(call_id=attrs.get("gen_ai.tool.call.id"), name=name, result=loads_layers(obs.get("output")),
                   is_error=obs.get("level") == "ERROR", start=parse_time(obs.get("startTime")))


def _score_name(name: Any) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name or "score"))
    return clean if re.match(r"[A-Za-z_]", clean) else f"_{clean}"


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        trace = value["trace"] if isinstance(value.get("trace"), dict) else value
        observations = value.get("observations") or trace.get("observations") or []
        notes: Counter[str] = Counter()
        names = {o.get("id"): o.get("name") for o in observations if isinstance(o, dict)}
        steps, runs = [], []
        for i, obs in enumerate(observations):
            with at("observations", i):
                if obs.get("type") == "GENERATION":
                    steps.append(_step(obs, names, notes))
                elif obs.get("type") == "TOOL":
                    runs.append(_tool_run(obs))
        threads = merge(steps)
        if not threads:  # no model calls traced: the trace's own input/output is all there is
            with at("trace"):
                msgs = messages_of(trace.get("input"), notes, output=False) + messages_of(
                    trace.get("output"), notes, output=True)
            threads = merge([Step(input=[], output=msgs)])
        ends = [parse_time(o.get("endTime")) for o in observations if isinstance(o, dict) and o.get("endTime")]
        trace_meta = loads_layers(trace.get("metadata"))
        owner: dict[str, str] = {}
        trajs = []
        for n, th in enumerate(threads):
            runs = attach_tool_runs(th, runs)
            if n == 0:
                th.notes.update(notes)
            tid = stable_id(ctx.fmt, trace["id"], n or None)
            first, last = th.steps[0], th.steps[-1]
            models = [s.model for s in th.steps if s.model]
            t = build_trajectory(
                ctx, trajectory_id=tid, messages=relink(th.messages, th.notes),
                original=value if n == 0 else {"see": trajs[0].trajectory_id, "thread": n},
                agent=trace.get("name") if n == 0 else (first.agent or trace.get("name")), model=models[-1] if models else None,
                session_id=trace.get("sessionId"), tools=th.tools, notes=th.notes,
                started_at=trace.get("timestamp") if n == 0 else first.start,
                ended_at=max(ends) if n == 0 and ends else last.end, thread=n, trace_id=trace["id"],
                trace_name=trace.get("name"), user_id=trace.get("userId"), tags=trace.get("tags") or None,
                trace_metadata=trace_meta or None, observation_ids=[s.ref for s in th.steps if s.ref] or None)
            trajs.append(t)
            owner.update({s.ref: tid for s in th.steps if s.ref})
        if runs:
            trajs[0].metadata["unlinked_tool_runs"] = [r.name for r in runs]
        yield from trajs
        by_id = {t.trajectory_id: t for t in trajs}
        scores = loads_layers(value.get("scores") or trace.get("scores")) or []
        for j, s in enumerate(scores):
            with at("trace.scores", j):
                target = by_id[owner.get(s.get("observationId"), trajs[0].trajectory_id)]
                numeric = s.get("value") if s.get("dataType") != "CATEGORICAL" else None
                yield build_outcome(
                    target, _score_name(s.get("name")), numeric, label=s.get("stringValue"),
                    source=SCORE_SOURCES.get(str(s.get("source")), str(s.get("source") or "judge").lower()),
                    recorded_at=s.get("timestamp"), score_id=s.get("id"), comment=s.get("comment"),
                    observation_id=s.get("observationId"), data_type=s.get("dataType"))

    return per_record(src.records(), one)

