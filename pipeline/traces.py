"""Trajectories as MLflow traces: one trace per trajectory, a span per assistant turn and per tool call,
outcomes (reward, success, a judge's label) as assessments, so a person opens MLflow's Traces tab and
reads what an agent or a checkpoint did, step by step, with its score beside it.

One conversion serves both callers: the eval stage's online rollouts (linked to the run that trained the
checkpoint, `mlflow.sourceRun`, so the run page's Traces tab lists them) and `tracemill trajectories
publish` (a workspace's captured trajectories). It takes plain message dicts (`pipeline.schema.Message`
as JSON), so it sits with the root and imports no room.

Why traces are built here and written with the tracking store's own calls (`log_spans` + `start_trace`)
instead of `mlflow.start_span`: the fluent tracing API exports through a process-global tracer to the
process-global tracking URI, asynchronously; tracemill names its store per call (`MlflowTracker`) and a
Dagster process may talk to more than one. Trace ids are derived from the trajectory and the run or
experiment, so logging the same rollouts again finds them and skips them instead of duplicating them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PREVIEW_CHARS = 1000
TRAJECTORY_TAG = "tracemill.trajectory_id"
_SOURCE_TYPES = {"human": "HUMAN", "judge": "LLM_JUDGE"}  # anything else (env, test, grader…) is CODE


@dataclass(frozen=True)
class Score:
    """An outcome as an assessment: a number, a bool or a label, and who gave it (`env`, `human`, `judge`…)."""

    name: str
    value: float | bool | str
    source: str = "env"
    rationale: str | None = None
    step: int | None = None


@dataclass
class TrajectoryTrace:
    """What one trace shows. `key` identifies the trajectory (its id); `inputs` what the agent was asked
    (default: the messages before its first turn), `outputs` what it answered (default: its last turn);
    `expectations` the ground truth beside the scores (an eval task with its answer); `tags` are searchable
    (`tag.task_id = 't-3'`), `metadata` is context."""

    key: str
    name: str
    messages: Sequence[Mapping[str, Any]]
    scores: Sequence[Score] = ()
    expectations: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    inputs: Any = None
    outputs: Any = None
    started_at: datetime | None = None
    seconds: float | None = None
    error: str | None = None


def _openai(m: Mapping[str, Any]) -> dict[str, Any]:
    """A message in the OpenAI chat shape MLflow's trace view renders as a conversation."""
    out: dict[str, Any] = {"role": m.get("role"), "content": m.get("content")}
    if m.get("tool_calls"):
        out["tool_calls"] = [{"id": c.get("id"), "type": "function",
                              "function": {"name": c.get("name"), "arguments": _args_text(c.get("arguments"))}}
                             for c in m["tool_calls"]]
    for key in ("tool_call_id", "name"):
        if m.get(key):
            out[key] = m[key]
    return out


def _args_text(args: Any) -> str:
    return args if isinstance(args, str) else json.dumps(args, default=str)


def _args_value(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def steps(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The trajectory as spans to draw, in order: an assistant turn (`CHAT_MODEL`: the messages it answered
    since the previous turn, its reply) and then each tool call it made (`TOOL`: the arguments, the result,
    an error status when the tool failed)."""
    results = {m.get("tool_call_id"): m for m in messages if m.get("role") == "tool" and m.get("tool_call_id")}
    out: list[dict[str, Any]] = []
    context: list[dict[str, Any]] = []
    turn = 0
    for m in messages:
        if m.get("role") != "assistant":
            context.append(_openai(m))
            continue
        turn += 1
        meta = {k: v for k, v in (m.get("meta") or {}).items() if v is not None and k != "timestamp"}
        out.append({"name": f"turn {turn}", "type": "CHAT_MODEL", "inputs": {"messages": context},
                    "outputs": _openai(m), "attributes": meta, "error": None})
        context = []
        for call in m.get("tool_calls") or []:
            result = results.get(call.get("id")) or {}
            out.append({"name": str(call.get("name") or "tool"), "type": "TOOL",
                        "inputs": _args_value(call.get("arguments")), "outputs": result.get("content"),
                        "attributes": {"tool_call_id": call.get("id")},
                        "error": str(result.get("content") or "tool error") if result.get("is_error") else None})
    return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _digest(*parts: str, size: int) -> bytes:
    return hashlib.sha256("|".join(parts).encode()).digest()[:size]


def _span(trace_id: str, otel_id: bytes, span_id: bytes, parent: bytes | None, name: str, kind: str, inputs: Any,
          outputs: Any, start_ns: int, end_ns: int, error: str | None, attributes: Mapping[str, Any]) -> Any:
    from mlflow.entities import Span

    attrs = {"mlflow.traceRequestId": trace_id, "mlflow.spanType": kind, "mlflow.spanInputs": inputs,
             "mlflow.spanOutputs": outputs, **attributes}
    return Span.from_dict({
        "trace_id": _b64(otel_id), "span_id": _b64(span_id), "parent_span_id": _b64(parent) if parent else None,
        "name": name, "start_time_unix_nano": start_ns, "end_time_unix_nano": end_ns, "events": [], "links": [],
        "status": {"code": "STATUS_CODE_ERROR" if error else "STATUS_CODE_OK", "message": error or ""},
        "attributes": {k: json.dumps(v, default=str) for k, v in attrs.items()}})


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:PREVIEW_CHARS]


def build_trace(t: TrajectoryTrace, experiment_id: str, run_id: str | None = None,
                model_id: str | None = None) -> tuple[Any, list[Any]]:
    """(TraceInfo, spans) for one trajectory. Step timings are spread evenly over the trajectory's duration
    (the order is what a reader needs; a rollout records no per-tool time)."""
    from mlflow.entities import AssessmentSource, Expectation, Feedback, TraceInfo, TraceLocation, TraceState

    otel_id = _digest(experiment_id, run_id or "", t.key, size=16)
    trace_id = "tr-" + otel_id.hex()
    start_ns = int((t.started_at.timestamp() if t.started_at else time.time()) * 1e9)
    drawn = steps(t.messages)
    total_ns = max(int((t.seconds or 0) * 1e9), len(drawn) + 1)
    root_id = _digest(trace_id, "root", size=8)
    last = next((m for m in reversed(t.messages) if m.get("role") == "assistant"), None)
    asked = next((i for i, m in enumerate(t.messages) if m.get("role") == "assistant"), len(t.messages))
    inputs = t.inputs if t.inputs is not None else {"messages": [_openai(m) for m in t.messages[:asked]]}
    outputs = t.outputs if t.outputs is not None else (last or {}).get("content")
    spans = [_span(trace_id, otel_id, root_id, None, t.name, "AGENT", inputs, outputs, start_ns, start_ns + total_ns,
                   t.error, {})]
    width = total_ns // (len(drawn) + 1)
    for i, s in enumerate(drawn):
        begin = start_ns + width * i
        spans.append(_span(trace_id, otel_id, _digest(trace_id, str(i), size=8), root_id, s["name"], s["type"],
                           s["inputs"], s["outputs"], begin, begin + width, s["error"], s["attributes"]))
    metadata = {"mlflow.trace_schema.version": "3", **{k: str(v) for k, v in t.metadata.items()}}
    if run_id:
        metadata["mlflow.sourceRun"] = run_id  # what the run page's Traces tab filters on
    if model_id:
        metadata["mlflow.modelId"] = model_id  # and the logged model's page
    feedback = [Feedback(name=s.name, value=s.value, rationale=s.rationale, trace_id=trace_id,
                         source=AssessmentSource(source_type=_SOURCE_TYPES.get(s.source, "CODE"), source_id=s.source),
                         metadata={"step": str(s.step)} if s.step is not None else None) for s in t.scores]
    feedback += [Expectation(name=k, value=v, trace_id=trace_id,
                             source=AssessmentSource(source_type="CODE", source_id="environment"))
                 for k, v in t.expectations.items()]
    info = TraceInfo(trace_id=trace_id, trace_location=TraceLocation.from_experiment_id(experiment_id),
                     request_time=start_ns // 1_000_000, execution_duration=total_ns // 1_000_000,
                     state=TraceState.ERROR if t.error else TraceState.OK, request_preview=_preview(inputs),
                     response_preview=_preview(outputs), trace_metadata=metadata,
                     tags={"mlflow.traceName": t.name, TRAJECTORY_TAG: t.key, **{k: str(v) for k, v in t.tags.items()}},
                     assessments=feedback)
    return info, spans


@dataclass(frozen=True)
class Published:
    """What `log_traces` did: the trace ids written, and how many were there already."""

    trace_ids: list[str]
    skipped: int


def log_traces(tracker: Any, traces: Iterable[TrajectoryTrace], run_id: str | None = None,
               model_id: str | None = None) -> Published:
    """Write trajectories as traces into the tracker's experiment, linked to `run_id` (and `model_id`) when
    given; a trace already there (same trajectory, same run or experiment) is skipped."""
    from mlflow.entities import TraceData
    from mlflow.exceptions import MlflowException
    from mlflow.tracing.client import TracingClient

    tracker.ensure_db()
    client = TracingClient(tracker.tracking_uri)
    experiment_id = tracker.experiment_id
    written, skipped, spans_in_store = [], 0, True
    built = [build_trace(t, experiment_id, run_id, model_id) for t in traces]
    fresh = []
    for info, spans in built:
        try:
            client.get_trace_info(info.trace_id)
            skipped += 1
        except MlflowException:
            fresh.append((info, spans))
    if fresh:
        try:
            client.log_spans(experiment_id, [s for _, spans in fresh for s in spans])
        except NotImplementedError:  # a store without span logging keeps spans as trace artifacts
            spans_in_store = False
        except MlflowException as exc:  # a tracking server over a file store answers this way
            if "span logging is not supported" not in str(exc):
                raise
            spans_in_store = False
    for info, spans in fresh:
        if spans_in_store:
            info.tags["mlflow.trace.spansLocation"] = "TRACKING_STORE"
        stored = client.start_trace(info)
        if not spans_in_store:
            client._upload_trace_data(stored, TraceData(spans=spans))  # what MLflow's own exporter does there
        written.append(info.trace_id)
    return Published(written, skipped)


def traces_link(tracker: Any, run_id: str | None = None) -> str:
    """Where a person reads them: the run's Traces tab, or the experiment's. A sqlite store has no server,
    so the link is the `mlflow ui` default (`make mlflow-ui`) on 127.0.0.1:5000."""
    base = tracker.tracking_uri.rstrip("/") if tracker.tracking_uri.startswith(("http://", "https://")) \
        else "http://127.0.0.1:5000"
    page = f"runs/{run_id}/traces" if run_id else "traces"
    return f"{base}/#/experiments/{tracker.experiment_id}/{page}"
