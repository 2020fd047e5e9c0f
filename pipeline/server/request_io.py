"""Request plumbing of the capture server: bounded body reading, batch parsing, per-item results,
and the files that hold *open* (streamed) trajectories until they are closed."""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
from fastapi import HTTPException, Request, Response
from pydantic import BaseModel, ValidationError

from pipeline.capture.workspace import Workspace
from pipeline.schema import Outcome, format_validation_error
from pipeline.server.group_commit import fsync_dir

_top = msgspec.json.Decoder(list[msgspec.Raw] | dict[str, msgspec.Raw])
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def respond(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def fail(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers or None)


def describe(exc: BaseException) -> str:
    return format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc) or type(exc).__name__


def result(accepted: int, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"accepted": accepted, "rejected": len(errors), "errors": errors}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit`: the declared length is checked before
    reading, the streamed size while reading (chunked uploads), the inflated size for gzip."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise fail(400, "invalid Content-Length")
        if int(declared) > limit:
            raise fail(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise fail(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise fail(400, f"invalid gzip body: {exc}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise fail(413, f"decompressed body exceeds the limit of {limit} bytes")
    return body


# ---- batches --------------------------------------------------------------------------------
def raw_items(body: bytes, key: str) -> list[msgspec.Raw]:
    """A batch is a JSON array, or `{"<key>": [...]}`; any other object is a batch of one."""
    if not body.strip():
        raise fail(400, f"empty body: send a JSON array of {key}")
    try:
        top = _top.decode(body)
    except msgspec.ValidationError:
        raise fail(400, f'body must be a JSON array of {key} or an object {{"{key}": [...]}}') from None
    except msgspec.DecodeError as exc:
        raise fail(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise fail(400, "malformed JSON: nested too deeply") from None
    if isinstance(top, list):
        return top
    if key in top:
        try:
            return _raw_list.decode(top[key])
        except msgspec.ValidationError:
            raise fail(400, f'"{key}" must be a JSON array') from None
    return [msgspec.Raw(body)]


def loads(body: bytes, key: str) -> Any:
    """Any JSON body (orjson), or a 400 that says where the JSON broke."""
    if not body.strip():
        raise fail(400, f"empty body: send a JSON array of {key}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise fail(400, f"malformed JSON: {exc}") from None


def items(body: bytes, key: str) -> list[Any]:
    """Like `raw_items`, decoded: for the record types validated with pydantic."""
    obj = loads(body, key)
    if isinstance(obj, dict) and key in obj:
        obj = obj[key]
        if not isinstance(obj, list):
            raise fail(400, f'"{key}" must be a JSON array')
    if isinstance(obj, dict):
        return [obj]
    if not isinstance(obj, list):
        raise fail(400, f'body must be a JSON array of {key} or an object {{"{key}": [...]}}')
    return obj


def validate_models(batch: list[Any], model: type[BaseModel], id_field: str) -> tuple[dict, list[dict[str, Any]]]:
    """Validate outcomes/preferences with the pydantic schema; group accepted ones by landing day."""
    groups: dict[tuple[str, str], list[bytes]] = {}
    errors = []
    kind = "outcome" if model is Outcome else "preference"
    for i, item in enumerate(batch):
        try:
            rec = model.model_validate(item)
            data = orjson.dumps(rec.model_dump(mode="json"))
        except Exception as exc:  # noqa: BLE001 - pydantic lets TypeError from validators through
            ident = item.get(id_field) if isinstance(item, dict) else None
            errors.append({"index": i, "id": ident if isinstance(ident, str) else None, "error": describe(exc)})
            continue
        groups.setdefault((kind, rec.recorded_at.date().isoformat()), []).append(data)  # type: ignore[attr-defined]
    return groups, errors


# ---- open trajectories -------------------------------------------------------------------------
def open_paths(ws: Workspace, tid: str) -> tuple[Path, Path]:
    """`<ws>/open/<sha256(id)>.ndjson` while open, renamed `.closed` once landed (the tombstone that
    makes a retried close idempotent). Hashing keeps any client id a safe file name."""
    name = hashlib.sha256(tid.encode()).hexdigest()[:40]
    return ws.open_dir / f"{name}.ndjson", ws.open_dir / f"{name}.closed"


TOMBSTONE_TTL_S = 7 * 86400


def prune_tombstones(home: Path, ttl_s: float | None = None) -> int:
    """Delete `.closed` tombstones older than the TTL (`$TRACEMILL_TOMBSTONE_TTL_S`, default 7 days).
    A tombstone only has to outlive a client's close retries; kept forever they pile up one per
    streamed trajectory. Returns how many were removed."""
    ttl = float(os.environ.get("TRACEMILL_TOMBSTONE_TTL_S") or TOMBSTONE_TTL_S) if ttl_s is None else ttl_s
    cutoff, removed = time.time() - ttl, 0
    for path in [*home.glob("workspaces/*/open/*.closed"), *home.glob("open/*/*.closed")]:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def fold_open_trajectory(tid: str, path: Path, close_header: dict[str, Any]) -> dict[str, Any]:
    """Rebuild an open trajectory: headers merge (later wins), messages go to their offsets
    (a retried append with the same offset replaces instead of duplicating)."""
    header: dict[str, Any] = {}
    slots: dict[int, Any] = {}
    end = 0
    for line in path.read_bytes().splitlines():
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn line from a crash: it was never acknowledged
        header.update(rec.get("header") or {})
        start = rec["offset"] if isinstance(rec.get("offset"), int) else end
        for i, m in enumerate(rec.get("messages") or []):
            slots[start + i] = m
        end = max(end, start + len(rec.get("messages") or []))
    header.update(close_header)
    header.pop("messages", None)
    header.setdefault("ended_at", datetime.now(UTC).isoformat())
    return {**header, "trajectory_id": tid, "messages": [slots[k] for k in sorted(slots)]}


def mark_closed(open_path: Path, closed_path: Path) -> None:
    """Atomic rename + directory fsync: after a crash the trajectory is open or closed, never both."""
    os.replace(open_path, closed_path)
    fsync_dir(open_path.parent)


