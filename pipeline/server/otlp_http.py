"""OTLP/HTTP trace export → tracemill records, for `POST /v1/traces` on the capture server.

`decode_export` turns either wire encoding into the OTLP *JSON* shape (camelCase keys, hex ids,
integer enums), so exactly one mapper exists: the OTLP importer (`pipeline.capture.importers.otlp
.otlp_to_records`), which also reads OTLP JSON files. There is deliberately no second, simpler
mapper here: two mappers would give the same trace two different trajectory ids.

`land_groups` decides what a request lands: not its trajectories but its spans, split per trace
(`pipeline.lake.otlp_assembly`), because exporters send one trace in several requests; ingest assembles
them. The mapper still runs on every request, so a malformed span is refused at once (400 naming its
path) and `gen_ai.evaluation.result` events land as outcomes right away.
"""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable
from typing import Any

import orjson

from pipeline.capture import fast_validate as fastschema
from pipeline.lake import otlp_assembly as otlp_assemble
from pipeline.server.request_io import describe
from pipeline.server.request_io import land_groups as grouped

Mapper = Callable[[dict[str, Any]], tuple[list[Any], list[Any]]]
_IMPORTER_CANDIDATES = (("pipeline.capture.importers.otlp", "otlp_to_records"),)


class OtlpDecodeError(ValueError):
    pass


class MapperMissing(RuntimeError):
    pass


def decode_export(body: bytes, content_type: str) -> dict[str, Any]:
    """The request as an OTLP JSON dict, whichever encoding the exporter used."""
    if "protobuf" in content_type:
        from google.protobuf.json_format import MessageToDict
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        try:
            msg = ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise OtlpDecodeError(f"invalid OTLP protobuf: {exc}") from None
        obj = MessageToDict(msg, use_integers_for_enums=True)
        _hex_ids(obj)
        return obj
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise OtlpDecodeError("an OTLP export is a JSON object with `resourceSpans`")
    return obj


def _hex_ids(obj: dict[str, Any]) -> None:
    """Protobuf JSON writes bytes as base64; OTLP JSON wants trace/span ids as hex."""
    for rs in obj.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for holder in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if holder.get(key):
                            holder[key] = base64.b64decode(holder[key]).hex()


def encode_response(rejected: int, message: str, content_type: str) -> tuple[bytes, str]:
    """An ExportTraceServiceResponse in the request's encoding (partial success when some failed)."""
    if "protobuf" in content_type:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        resp = ExportTraceServiceResponse()
        if rejected or message:
            resp.partial_success.rejected_spans = rejected
            resp.partial_success.error_message = message
        return resp.SerializeToString(), "application/x-protobuf"
    body: dict[str, Any] = {}
    if rejected or message:
        body["partialSuccess"] = {"rejectedSpans": rejected, "errorMessage": message}
    return orjson.dumps(body), "application/json"


def mapper() -> tuple[Mapper | None, str]:
    """The OTLP mapper (export dict -> (trajectories, outcomes)) and its name; None if not installed."""
    for module, name in _IMPORTER_CANDIDATES:
        try:
            fn = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if callable(fn):
            return fn, f"{module}.{name}"
    return None, "none"


def land_groups(obj: dict[str, Any], workspace: str) -> tuple[dict[tuple[str, str], list[bytes]], list[str]]:
    """What one decoded export request lands, as `{(kind, day): [record JSON]}` for the group
    committer: its spans split per trace (kind `otlp_span`) and its evaluation outcomes; plus the
    problems to report as partial success (trajectories the request alone maps to that fail the schema,
    invalid outcomes). Raises OtlpDecodeError (a 400) when the mapper refuses the request."""
    fn, _ = mapper()
    if fn is None:
        raise MapperMissing("OTLP import is not installed (pipeline.capture.importers.otlp)")
    try:
        trajectories, outcomes = fn(obj)
        fragments = [(day, orjson.dumps(frag)) for day, frag in otlp_assemble.split_by_trace(obj)]
    except Exception as exc:  # noqa: BLE001 - a malformed export must be a 400, never a 500
        raise OtlpDecodeError(f"could not map the OTLP export: {describe(exc)}") from None
    _, bad = fastschema.validate_many(trajectories, workspace)
    ok, out_bad = fastschema.validate_many(outcomes, None, "outcome")
    groups = grouped("outcome", ok)
    for day, frag in fragments:
        groups.setdefault((otlp_assemble.KIND, day), []).append(frag)
    return groups, [f"trajectory {r.id or r.index}: {r.error}" for r in bad] + [
        f"outcome {r.id or r.index}: {r.error}" for r in out_bad]
