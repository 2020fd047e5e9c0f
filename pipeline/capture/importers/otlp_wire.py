"""The OTLP/JSON wire shapes, with nothing GenAI-specific: field access under both JSON mappings,
AnyValue and attribute decoding, trace/span ids, and the decoded `Span`.

Why a module of its own: the OTLP importer (`otlp`) reads spans, the span semantics (`otel_spans`)
interpret them and live assembly (`pipeline.lake.otlp_assembly`) re-groups raw exports; all three
need these few helpers, and keeping them here lets each import them downward instead of in a circle.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.capture.importers.base import FieldError
from pipeline.capture.importers.source import Record


def g(d: dict[str, Any], camel: str, default: Any = None) -> Any:
    """Field by its OTLP/JSON (lowerCamel) name or its proto (snake_case) name."""
    if camel in d:
        return d[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return d.get(snake, default)


def any_value(v: Any) -> Any:
    """Decode an OTLP AnyValue (`{"stringValue": …}`, `{"intValue": "3"}`, arrays, kvlists)."""
    if not isinstance(v, dict):
        return v
    for name, conv in (("stringValue", str), ("boolValue", bool), ("intValue", int), ("doubleValue", float),
                       ("bytesValue", str)):
        raw = g(v, name)
        if raw is not None:
            return conv(raw)
    arr = g(v, "arrayValue")
    if arr is not None:
        return [any_value(x) for x in arr.get("values") or []]
    kv = g(v, "kvlistValue")
    if kv is not None:
        return attributes(kv.get("values") or [])
    return None


def attributes(items: Any) -> dict[str, Any]:
    if isinstance(items, dict):  # already a plain mapping (some SDK debug exporters)
        return dict(items)
    return {a["key"]: any_value(a.get("value")) for a in items or []}


def hex_id(value: Any) -> str | None:
    """Trace/span ids: hex per OTLP/JSON, base64 per protobuf's JSON mapping."""
    if not value:
        return None
    s = str(value)
    if len(s) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in s):
        return s.lower()
    try:
        return base64.b64decode(s, validate=True).hex()
    except (binascii.Error, ValueError):
        raise FieldError("", f"id {s!r} is neither hex nor base64") from None


@dataclass
class Span:
    trace_id: str
    span_id: str | None
    parent_id: str | None
    name: str
    start: datetime | None
    end: datetime | None
    attrs: dict[str, Any]
    events: list[dict[str, Any]]
    error: bool
    status: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str | None = None
    record: Record | None = None
