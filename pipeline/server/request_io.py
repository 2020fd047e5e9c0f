"""Request plumbing of the capture server: bounded body reading, batch parsing, per-item results,
and the files that hold *open* (streamed) trajectories until they are closed."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
from fastapi import HTTPException, Request, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from pipeline import json_rules
from pipeline.capture.fast_validate import Accepted, Rejected
from pipeline.capture.workspace import Workspace
from pipeline.logs import event, get_logger
from pipeline.schema import format_validation_error
from pipeline.server.group_commit import fsync_dir

log = get_logger("server")
_top = msgspec.json.Decoder(list[msgspec.Raw] | dict[str, msgspec.Raw])
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def respond(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def fail(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers or None)


def describe(exc: BaseException) -> str:
    return format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc) or type(exc).__name__


async def read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The request body, refused with 413 past `limit`: the declared length is checked before
    reading, the streamed size while reading (chunked uploads), the inflated size for gzip.
    A client that stops sending (a Content-Length larger than its body) gets a 408 after `timeout_s`
    without a byte, or 10 × `timeout_s` in all, instead of holding a connection for minutes; one that
    hangs up is one log line, not a traceback."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise fail(400, "invalid Content-Length")
        if int(declared) > limit:
            raise fail(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + 10 * timeout_s
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), min(timeout_s, max(0.0, deadline - time.monotonic())))
        except StopAsyncIteration:
            break
        except TimeoutError:
            event(log, "request body timed out", logging.WARNING, path=request.url.path, received=size,
                  declared=declared)
            raise fail(408, f"request body not received in time: {size} of {declared or 'unknown'} bytes "
                            f"arrived (idle limit {timeout_s:g}s)", Connection="close") from None
        except ClientDisconnect:
            event(log, "client disconnected before sending its body", path=request.url.path, received=size,
                  declared=declared)
            raise fail(400, "client disconnected") from None
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
def raw_items(body: bytes, key: str) -> list[msgspec.Raw | bytes]:
    """A batch is a JSON array, or `{"<key>": [...]}`; any other object is a batch of one. Items stay
    JSON text, validated one by one: an item that no parser accepts (a `NaN` literal, an unpaired
    `\\ud800`, nesting too deep) is refused alone, with its path, and never costs the batch its valid
    items. Only a body whose items cannot be told apart (unbalanced brackets, an unterminated string,
    text after the value) is a 400."""
    if not body.strip():
        raise fail(400, f"empty body: send a JSON array of {key}")
    try:
        top = _top.decode(body)
    except msgspec.ValidationError:
        raise fail(400, f'body must be a JSON array of {key} or an object {{"{key}": [...]}}') from None
    except (msgspec.DecodeError, RecursionError) as exc:
        return _split_tolerantly(body, key, str(exc))
    if isinstance(top, list):
        return top
    if key in top:
        try:
            return _raw_list.decode(top[key])
        except msgspec.ValidationError:
            raise fail(400, f'"{key}" must be a JSON array') from None
    return [msgspec.Raw(body)]


_TOKEN = json_rules.TOKEN


def _members(body: bytes, start: int) -> tuple[list[bytes], int]:
    """The members of the array or object opening at `body[start]`, split at its own commas (as text),
    and the offset after it. ValueError when the members cannot be told apart."""
    depth, begin, parts = 0, start + 1, []
    for m in _TOKEN.finditer(body, start):
        tok = m.group()
        if tok == b'"':
            raise ValueError(f"unterminated string at byte {m.start()}")
        c = tok[:1]
        if c in b"[{":
            depth += 1
        elif c in b"]}" or (c == b"," and depth == 1):
            depth -= c != b","
            if depth == 0 or c == b",":
                parts.append(body[begin:m.start()].strip())
                begin = m.end()
            if depth == 0:
                if parts == [b""]:
                    parts = []
                if b"" in parts:
                    raise ValueError("an empty member (two commas in a row, or a trailing comma)")
                return parts, m.end()
    raise ValueError("unbalanced brackets: the body ends inside an array or object")


def _split_tolerantly(body: bytes, key: str, why: str) -> list[msgspec.Raw | bytes]:
    """`raw_items` for a body the fast decoder refused: find the items by their brackets alone."""
    start = len(body) - len(body.lstrip())
    opener = body[start:start + 1]
    try:
        if opener not in (b"[", b"{"):
            raise ValueError(why)
        parts, end = _members(body, start)
        if body[end:].strip():
            raise ValueError(f"unexpected text after the JSON value at byte {end}")
        if opener == b"[":
            return parts
        for member in parts:
            m = _TOKEN.match(member)
            name = json_rules.loads(m.group()) if m and m.group() != b'"' else None
            value = member[m.end():].lstrip()[1:].lstrip() if m else b""
            if name == key and value.startswith(b"["):
                items, after = _members(value, 0)
                if value[after:].strip():
                    raise ValueError(f'unexpected text after the "{key}" array')
                return items
    except (ValueError, RecursionError) as exc:
        raise fail(400, f"malformed JSON: {exc}") from None
    try:  # an object without the batch key: a batch of one, refused as a whole with its path
        json_rules.loads(body)
    except json_rules.JsonValueError as exc:
        raise fail(400, f"malformed JSON at {exc}" if exc.path else exc.reason) from None
    return [body]


def loads(body: bytes, key: str) -> Any:
    """Any JSON body, decoded exactly (`json_rules.loads`), or a 400 that says where it broke."""
    if not body.strip():
        raise fail(400, f"empty body: send a JSON array of {key}")
    try:
        return json_rules.loads(body)
    except json_rules.JsonValueError as exc:
        raise fail(400, str(exc) if exc.path else exc.reason) from None


def result(accepted: int, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"accepted": accepted, "rejected": len(errors), "errors": errors}


def land_groups(kind: str, accepted: list[Accepted]) -> dict[tuple[str, str], list[bytes]]:
    """Accepted records grouped by landing day, as the group committer takes them."""
    groups: dict[tuple[str, str], list[bytes]] = {}
    for acc in accepted:
        groups.setdefault((kind, acc.day), []).append(acc.json)
    return groups


def rejections(bad: list[Rejected]) -> list[dict[str, Any]]:
    return [{"index": r.index, "id": r.id, "error": r.error} for r in bad]


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


