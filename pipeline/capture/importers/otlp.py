"""OTLP JSON trace files, as the Collector `file` exporter and OTLP/HTTP JSON write them.

A file holds one `ExportTraceServiceRequest` per line (or one document): `resourceSpans[].scopeSpans[]
.spans[]`, each span with hex `traceId`/`spanId`, `startTimeUnixNano` as a string, `attributes` as a
list of `{key, value: AnyValue}`, `events`, and `status`. Protobuf's own JSON mapping (base64 ids,
snake_case names with `preserving_proto_field_name`) is accepted too. A malformed span is reported
with its path (`resourceSpans.0.scopeSpans.1.spans.3`) and the other spans still import.

Spans are grouped into trajectories by `gen_ai.conversation.id` when a trace carries one (a chat
session spans several traces), else by trace id; within a group, model-call spans are merged into
conversation threads (`threads`), tool spans fill in results and errors, and
`gen_ai.evaluation.result` span events become outcomes (source `judge`). `metadata.original` keeps
the group's spans without the message attributes that were converted (they would double the size).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pipeline.capture.importers.base import (
    DEFAULT_TIME,
    Context,
    FieldError,
    Item,
    RecordError,
    at,
    build_outcome,
    build_trajectory,
    isolated,
    parse_time,
)
from pipeline.capture.importers.otel_spans import (
    CONTENT_PREFIXES,
    classify,
    step_of,
    tool_messages,
    tool_run_of,
)
from pipeline.capture.importers.otlp_wire import Span, attributes, g, hex_id
from pipeline.capture.importers.source import Record, Source
from pipeline.capture.importers.threads import attach_tool_runs, merge, relink
from pipeline.schema import Outcome, format_validation_error


@dataclass(frozen=True)
class OutcomeError(RecordError):
    """A `gen_ai.evaluation.result` event whose outcome does not validate (a score of "NaN"): refused
    alone, never the trace it judges. `fields` are the outcome as sent, so the capture server refuses
    it per item with its field path (OTLP partial success) through its one validator."""

    fields: dict[str, Any] = field(default_factory=dict)


def _judgement(make: Callable[[], Outcome], fields: dict[str, Any]) -> Outcome | OutcomeError:
    try:
        return make()
    except ValidationError as exc:
        return OutcomeError(None, None, "gen_ai.evaluation.result", format_validation_error(exc), fields)


def _compact(span: Span) -> dict[str, Any]:
    """A span as kept in metadata.original (converted message attributes left out)."""
    attrs = {k: v for k, v in span.attrs.items() if not k.startswith(CONTENT_PREFIXES)}
    return {"name": span.name, "trace_id": span.trace_id, "span_id": span.span_id,
            "parent_span_id": span.parent_id, "start": span.start.isoformat() if span.start else None,
            "end": span.end.isoformat() if span.end else None, "attributes": attrs,
            "events": span.events, "status": span.status, "scope": span.scope}


def sniff(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(g(value, "resourceSpans"), list)


def _span(raw: dict[str, Any], resource: dict[str, Any], scope: str | None, rec: Record) -> Span:
    status = g(raw, "status") or {}
    code = str(status.get("code", ""))
    trace_id = hex_id(g(raw, "traceId"))
    if trace_id is None:
        raise FieldError("traceId", "missing")
    with at("attributes"):
        attrs = attributes(g(raw, "attributes"))
    events = []
    for k, e in enumerate(g(raw, "events") or []):
        with at("events", k):
            events.append({"name": e.get("name"), "time": parse_time(g(e, "timeUnixNano")),
                           "attributes": attributes(g(e, "attributes"))})
    return Span(trace_id=trace_id, span_id=hex_id(g(raw, "spanId")), parent_id=hex_id(g(raw, "parentSpanId")),
                name=str(raw.get("name", "")), start=parse_time(g(raw, "startTimeUnixNano")),
                end=parse_time(g(raw, "endTimeUnixNano")), attrs=attrs, events=events,
                error=code in ("2", "STATUS_CODE_ERROR", "ERROR"), status=status, resource=resource,
                scope=scope, record=rec)


def read_spans(src: Source) -> Iterator[Span | RecordError]:
    for rec in src.records():
        if rec.error is not None or not isinstance(rec.value, dict):
            yield RecordError(rec.index, rec.line, "", rec.error or "expected an ExportTraceServiceRequest object")
            continue
        for i, rs in enumerate(g(rec.value, "resourceSpans") or []):
            try:
                with at("resourceSpans", i, "resource"):
                    resource = attributes((g(rs, "resource") or {}).get("attributes"))
            except FieldError as exc:
                yield RecordError(rec.index, rec.line, exc.path, exc.reason)
                continue
            for j, ss in enumerate(g(rs, "scopeSpans") or g(rs, "instrumentationLibrarySpans") or []):
                scope = (g(ss, "scope") or g(ss, "instrumentationLibrary") or {}).get("name")
                for k, raw in enumerate(g(ss, "spans") or []):
                    path = f"resourceSpans.{i}.scopeSpans.{j}.spans.{k}"
                    yield from isolated(rec, path, lambda raw=raw, res=resource, sc=scope, r=rec: [_span(raw, res, sc, r)])


def trajectory_id(conversation: str | None, trace_id: str, thread: int = 0) -> str:
    """`otlp-<trace id>` (or `otlp-conversation-<id>`): the same ids the live capture endpoint
    (`POST /v1/traces`) uses, so a trace captured live and later imported from a file dedupes."""
    base = f"otlp-conversation-{conversation}" if conversation else f"otlp-{trace_id}"
    return (f"{base}:{thread}" if thread else base)[:256]


def _group_key(spans: list[Span]) -> str:
    conv = next((s.attrs["gen_ai.conversation.id"] for s in spans if s.attrs.get("gen_ai.conversation.id")), None)
    return f"conversation:{conv}" if conv else spans[0].trace_id


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for item in read_spans(src):
        if isinstance(item, RecordError):
            yield item
        else:
            by_trace[item.trace_id].append(item)
    groups: dict[str, list[Span]] = defaultdict(list)
    for spans in by_trace.values():
        groups[_group_key(spans)].extend(spans)
    for gkey, spans in groups.items():
        spans.sort(key=lambda s: (s.start is None, s.start or DEFAULT_TIME, s.span_id or ""))
        rec = spans[0].record or Record(0, None)
        yield from isolated(rec, f"trace {spans[0].trace_id}", lambda spans=spans, k=gkey: _group(ctx, k, spans))


def _group(ctx: Context, gkey: str, spans: list[Span]) -> Iterator[Item]:
    kinds = {id(s): classify(s.attrs) for s in spans}
    notes: Counter[str] = Counter()
    steps = [step_of(s, notes) for s in spans if kinds[id(s)] == "chat"]
    steps = [st for st in steps if st.input or st.output]
    if not steps:  # agent spans may carry the messages when model calls are not traced
        steps = [st for st in (step_of(s, notes) for s in spans if kinds[id(s)] == "agent") if st.input or st.output]
    runs = [tool_run_of(s) for s in spans if kinds[id(s)] == "tool"]
    if not steps and not runs:
        judged = list(_evaluations_alone(gkey, spans))
        if not judged:
            raise FieldError("", "no GenAI / OpenInference model or tool spans: nothing to import")
        yield from judged
        return
    threads = merge(steps) if steps else merge([tool_messages(runs)])
    agent_span = next((s for s in spans if kinds[id(s)] == "agent"), None)
    agent = next((s.attrs.get("gen_ai.agent.name") for s in spans if s.attrs.get("gen_ai.agent.name")), None)
    service = spans[0].resource.get("service.name")
    if not agent and service and not str(service).startswith("unknown_service"):
        agent = service
    conv = gkey.removeprefix("conversation:") if gkey.startswith("conversation:") else None
    starts = [s.start for s in spans if s.start]
    ends = [s.end for s in spans if s.end]
    owner: dict[str, str] = {}
    trajs = []
    for n, th in enumerate(threads):
        if steps:
            runs = attach_tool_runs(th, runs)
        if n == 0:
            th.notes.update(notes)
        first = th.steps[0]
        models = [st.model for st in th.steps if st.model]
        tid = trajectory_id(conv, spans[0].trace_id, n)
        t = build_trajectory(
            ctx, trajectory_id=tid, messages=relink(th.messages, th.notes),
            original={"spans": [_compact(s) for s in spans]} if n == 0 else {"see": trajs[0].trajectory_id},
            agent=(agent or "otlp") if n == 0 else (first.agent or agent or "otlp"),
            agent_version=spans[0].resource.get("service.version"), model=models[-1] if models else None,
            session_id=conv, tools=th.tools, notes=th.notes,
            started_at=(agent_span.start if agent_span and n == 0 else None) or (min(starts) if n == 0 and starts else first.start),
            ended_at=max(ends) if n == 0 and ends else th.steps[-1].end, thread=n,
            trace_ids=sorted({s.trace_id for s in spans}), resource=spans[0].resource or None)
        trajs.append(t)
        owner.update({st.ref: tid for st in th.steps if st.ref})
    if runs and steps:
        trajs[0].metadata["unlinked_tool_runs"] = [r.name for r in runs]
    yield from trajs
    by_id = {t.trajectory_id: t for t in trajs}
    for s in spans:
        for e in s.events:
            if e["name"] != "gen_ai.evaluation.result":
                continue
            a = e["attributes"]
            target = by_id[owner.get(s.span_id or "", trajs[0].trajectory_id)]
            name, value = str(a.get("gen_ai.evaluation.name") or "evaluation"), a.get("gen_ai.evaluation.score.value")
            yield _judgement(lambda a=a, e=e, s=s, target=target, name=name, value=value: build_outcome(
                target, name, value, label=a.get("gen_ai.evaluation.score.label"), source="judge",
                recorded_at=e["time"], explanation=a.get("gen_ai.evaluation.explanation"), span_id=s.span_id,
                response_id=a.get("gen_ai.response.id")), {"trajectory_id": target.trajectory_id, "name": name,
                                                            "value": value, "source": "judge"})



def _evaluations_alone(gkey: str, spans: list[Span]) -> Iterator[Outcome]:
    """`gen_ai.evaluation.result` events on spans without the model calls they judge: a judge that
    runs later usually reports on its own span (often in its own export request). They score the
    trajectory the trace (or its conversation) becomes, whose id is known from the ids alone."""
    conv = gkey.removeprefix("conversation:") if gkey.startswith("conversation:") else None
    target = trajectory_id(conv, spans[0].trace_id)
    for s in spans:
        for e in s.events:
            if e["name"] != "gen_ai.evaluation.result":
                continue
            a = e["attributes"]
            value = a.get("gen_ai.evaluation.score.value")
            name = str(a.get("gen_ai.evaluation.name") or "evaluation")
            yield _judgement(lambda a=a, e=e, s=s, name=name, value=value: Outcome(
                trajectory_id=target, name=name, value=float(value) if isinstance(value, bool) else value,
                label=a.get("gen_ai.evaluation.score.label"), source="judge",
                recorded_at=e["time"] or s.end or s.start or DEFAULT_TIME,
                metadata={k: v for k, v in {"explanation": a.get("gen_ai.evaluation.explanation"),
                                            "span_id": s.span_id, "response_id": a.get("gen_ai.response.id")}.items()
                          if v is not None}), {"trajectory_id": target, "name": name, "value": value, "source": "judge"})


def otlp_to_records(obj: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One OTLP export request (a decoded `POST /v1/traces` body) → (trajectory dicts, outcome dicts),
    the hook `pipeline.server.otlp_http.mapper()` looks for. Traces without GenAI / OpenInference spans are
    normal on a live endpoint (HTTP, DB spans) and are skipped; a malformed span raises ValueError
    naming its path, which the capture server answers with a 400."""
    trajs: list[dict[str, Any]] = []
    outs: list[dict[str, Any]] = []
    problems = []
    for item in convert(Source.from_value(obj), Context(fmt="otlp_json")):
        if isinstance(item, OutcomeError):
            outs.append(item.fields)  # refused per item by the server's validator, with its path
        elif isinstance(item, RecordError):
            if "nothing to import" not in item.reason:
                problems.append(f"{item.field}: {item.reason}")
        elif isinstance(item, Outcome):
            outs.append(item.model_dump(mode="json"))
        else:
            trajs.append(item.model_dump(mode="json", exclude_none=True))
    if problems:
        raise ValueError("; ".join(problems))
    return trajs, outs
