"""OTLP spans captured live are landed raw, split per trace, and assembled into trajectories at ingest.

Why: an OpenTelemetry exporter (`BatchSpanProcessor`) sends the spans of one trace in several export
requests (child model and tool spans end first, the root agent span last, in a later batch), and a
multi-turn chat is one trace per turn tied together only by `gen_ai.conversation.id`. Mapping each
request on its own gave every fragment the same trajectory id, and ingest ("the last received wins")
silently kept only the last fragment. So `POST /v1/traces` lands what it received, one record per
trace per request (`split_by_trace`, landing kind `otlp_span`), and `ingest_trajectories` merges the
day's fragments and maps them with the one OTLP mapper (`pipeline.capture.importers.otlp.otlp_to_records`),
so a trace captured live and the same trace imported from a file give the same trajectory.

A fragment record is itself an OTLP JSON export holding one trace's spans with their resource and
scope: `{"trace_id": <hex>, "resourceSpans": [...]}`, landed under the UTC day of its earliest span
start (the epoch day when no span has one, as the importer's `DEFAULT_TIME`). At ingest, spans are
deduplicated by (trace id, span id), the latest received wins (a retried export adds nothing), and an
assembled trajectory counts as received when its newest span was, so against a trajectory sent to the
batch endpoint with the same id the latest received still wins.

Limits:
* Assembly is per UTC day. A trace (or a conversation) whose spans straddle midnight is assembled
  once per day from that day's fragments: two rows with the same trajectory id in two partitions,
  each with that day's messages only.
* Each ingest re-assembles the whole day from all its fragments (like the rest of ingest, which
  rewrites the day): cost grows with the day's span volume, not with what is new.
* Every span of a request is landed, non-GenAI ones (HTTP, DB) included: a fragment cannot tell
  whether another fragment of its trace holds GenAI spans. Traces with none import nothing.
* Evaluation results (`gen_ai.evaluation.result` events) become outcomes at capture, from the
  request's own mapping (their ids are content-derived, so a re-sent request does not duplicate
  them); assembly maps them again but does not land them. A verdict on a span of its own (a judge
  that ran later) scores `otlp-<trace id>`, or the conversation its span names; one whose span does
  not name the conversation that the trace's model spans name points at `otlp-<trace id>`.
* A span without a span id is deduplicated only when re-sent byte for byte.
* An unmappable trace is quarantined whole (all its spans for the day) with the mapper's reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.capture.importers.base import DEFAULT_TIME, parse_time
from pipeline.capture.importers.otlp import otlp_to_records
from pipeline.capture.importers.otlp_wire import g, hex_id
from pipeline.capture.landing import LandedLine, read_landed
from pipeline.schema import format_validation_error

KIND = "otlp_span"
_SCOPE_LISTS = ("scopeSpans", "scope_spans", "instrumentationLibrarySpans", "instrumentation_library_spans")


def _walk(export: Any) -> Iterator[tuple[int, int, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(resource index, scope index, resource fields, scope fields, span) for every span of an export."""
    if not isinstance(export, dict):
        return
    rss = g(export, "resourceSpans")
    for i, rs in enumerate(rss if isinstance(rss, list) else []):
        if not isinstance(rs, dict):
            continue
        rmeta = {k: v for k, v in rs.items() if k not in _SCOPE_LISTS}
        sss = g(rs, "scopeSpans") or g(rs, "instrumentationLibrarySpans")
        for j, ss in enumerate(sss if isinstance(sss, list) else []):
            if not isinstance(ss, dict):
                continue
            smeta = {k: v for k, v in ss.items() if k != "spans"}
            spans = ss.get("spans")
            for span in spans if isinstance(spans, list) else []:
                if isinstance(span, dict):
                    yield i, j, rmeta, smeta, span


def _ids(span: dict[str, Any]) -> tuple[str, str]:
    """The dedupe key: (trace id, span id) as hex, a content hash standing in for a missing span id."""
    trace_id = hex_id(g(span, "traceId"))
    if trace_id is None:
        raise ValueError("a span has no traceId")
    span_id = hex_id(g(span, "spanId"))
    return trace_id, span_id or "sha1:" + hashlib.sha1(orjson.dumps(span, option=orjson.OPT_SORT_KEYS)).hexdigest()


def split_by_trace(export: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(day, fragment) per trace of one export request, each fragment an OTLP JSON export of that
    trace's spans under their own resource and scope. Raises ValueError on an unusable id or time
    (the capture server has already run the mapper, which refuses those first)."""
    frags: dict[str, dict[str, Any]] = {}
    slots: dict[tuple[Any, ...], dict[str, Any]] = {}
    earliest: dict[str, Any] = {}
    for i, j, rmeta, smeta, span in _walk(export):
        tid, _ = _ids(span)
        frag = frags.setdefault(tid, {"trace_id": tid, "resourceSpans": []})
        if (tid, i) not in slots:
            slots[(tid, i)] = {**rmeta, "scopeSpans": []}
            frag["resourceSpans"].append(slots[(tid, i)])
        if (tid, i, j) not in slots:
            slots[(tid, i, j)] = {**smeta, "spans": []}
            slots[(tid, i)]["scopeSpans"].append(slots[(tid, i, j)])
        slots[(tid, i, j)]["spans"].append(span)
        start = (parse_time(g(span, "startTimeUnixNano")) or DEFAULT_TIME).astimezone(UTC)
        earliest[tid] = min(start, earliest.get(tid, start))
    return [(earliest[tid].date().isoformat(), frag) for tid, frag in frags.items()]


@dataclass
class _Kept:
    """The latest received copy of one span, with where it came from."""

    received: int
    source: str
    line: int
    rmeta: dict[str, Any]
    smeta: dict[str, Any]
    span: dict[str, Any]


def _export(kept: list[_Kept]) -> dict[str, Any]:
    """One OTLP export of the given spans, grouped again under their resource and scope."""
    by_res: dict[bytes, dict[str, Any]] = {}
    by_scope: dict[tuple[bytes, bytes], dict[str, Any]] = {}
    for k in kept:
        rkey = orjson.dumps(k.rmeta, option=orjson.OPT_SORT_KEYS)
        skey = (rkey, orjson.dumps(k.smeta, option=orjson.OPT_SORT_KEYS))
        if rkey not in by_res:
            by_res[rkey] = {**k.rmeta, "scopeSpans": []}
        if skey not in by_scope:
            by_scope[skey] = {**k.smeta, "spans": []}
            by_res[rkey]["scopeSpans"].append(by_scope[skey])
        by_scope[skey]["spans"].append(k.span)
    return {"resourceSpans": list(by_res.values())}


def _reason(exc: BaseException) -> str:
    text = format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc) or type(exc).__name__
    return f"unmappable OTLP spans: {text}"


def _map(traces: dict[str, list[_Kept]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Trajectory dicts for the day's traces, and the reason per trace that could not be mapped. All
    traces are mapped together (a conversation spans several); if that fails, each trace alone finds
    the culprits and the rest are mapped together again."""

    def run(tids: list[str]) -> list[dict[str, Any]]:
        return otlp_to_records(_export([k for t in tids for k in traces[t]]))[0]

    try:
        return run(list(traces)), {}
    except Exception:  # noqa: BLE001 - a bad trace is quarantined below, it never fails the day
        failed: dict[str, str] = {}
    for tid in traces:
        try:
            run([tid])
        except Exception as exc:  # noqa: BLE001
            failed[tid] = _reason(exc)
    good = [t for t in traces if t not in failed]
    try:
        return run(good) if good else [], failed
    except Exception as exc:  # noqa: BLE001 - fails only when combined: quarantine all of it
        return [], {**failed, **dict.fromkeys(good, _reason(exc))}


def landed_lines(ws: Any, day: str) -> Iterator[LandedLine]:
    """The day's trajectories assembled from its landed OTLP fragments, as landed lines for the lake's
    one validation/quarantine path (`lake._validated`): an assembled trajectory is a line whose
    `received_ns` is its newest span's, and an unreadable fragment or an unmappable trace is a line
    with its `error`, so both are counted, quarantined and logged like any landed trajectory."""
    latest: dict[tuple[str, str], _Kept] = {}
    for line in read_landed(ws.landing, KIND, day):
        if line.error:
            yield line
            continue
        try:
            spans = [(_ids(span), rmeta, smeta, span) for _, _, rmeta, smeta, span in _walk(line.record)]
            if not spans:
                raise ValueError("not an OTLP span fragment (no spans)")
        except (ValueError, TypeError) as exc:
            yield replace(line, error=_reason(exc))
            continue
        for key, rmeta, smeta, span in spans:
            prev = latest.get(key)
            if prev is None or line.received_ns >= prev.received:
                latest[key] = _Kept(line.received_ns, line.source, line.line_no, rmeta, smeta, span)
    if not latest:
        return
    traces: dict[str, list[_Kept]] = {}
    for (tid, _), kept in sorted(latest.items()):
        traces.setdefault(tid, []).append(kept)
    received = {tid: max(k.received for k in kept) for tid, kept in traces.items()}
    mapped, failed = _map(traces)
    for tid, reason in failed.items():
        last = max(traces[tid], key=lambda k: k.received)
        record = {"trajectory_id": f"otlp-{tid}", "trace_id": tid, **_export(traces[tid])}
        yield LandedLine(last.source, last.line, last.received, record, error=reason)
    for rec in mapped:
        tids = [t for t in (rec.get("metadata") or {}).get("trace_ids") or [] if t in received] or list(received)
        yield LandedLine(f"{KIND}/{day}", 0, max(received[t] for t in tids), {**rec, "workspace": ws.name})
