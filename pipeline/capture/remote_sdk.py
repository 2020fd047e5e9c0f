"""Remote mode of the capture SDK: the `Workspace` write API, sent to a capture server in the background.

    ws = connect("http://127.0.0.1:8470", "ft-live", token)      # or RemoteWorkspace(...)
    with ws.trajectory("planner", task_id="t-17") as run: ...      # TrajectoryRecorder, unchanged
    ws.flush(5.0); ws.close()

Writes are validated in the caller (same errors as local mode), encoded once and put on a bounded
in-memory queue; one background thread sends them in batches (`batch_size` items or every
`flush_interval` s), retrying connection errors, 408/429 and 5xx with exponential backoff and jitter
for as long as the workspace is open: a server restart costs latency, not data. The agent's hot path
never waits on the network. When the queue is full (the server is down or slower than the agent) a
write waits at most `put_timeout` s for room; then, with `on_full="drop"` (default) the new records
are dropped, counted in `dropped` and reported like rejections, and with `on_full="raise"` the write
raises `QueueFull`. Records the server refuses are reported per item via `on_rejected` and the
`rejected` list. Only `flush()`/`close()` wait, and they wait for the server's durable acknowledgement.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from pipeline.capture import fast_validate as fastschema
from pipeline.capture.recorder import CaptureMethods
from pipeline.schema import Outcome, Preference, Trajectory

log = logging.getLogger("tracemill.remote")
_PATHS = {"trajectory": "trajectories", "outcome": "outcomes", "preference": "preferences"}


class QueueFull(RuntimeError):
    """Raised by writes when the send queue stayed full for `put_timeout` s and `on_full="raise"`."""


@dataclass(frozen=True)
class Rejection:
    """A record the server refused (or that was dropped/abandoned client-side), with the reason."""

    kind: str
    id: str | None
    error: str


@dataclass
class _Item:
    kind: str
    id: str | None
    data: bytes
    at: float


class RemoteWorkspace(CaptureMethods):
    """A workspace on a capture server, with the same write API as `pipeline.capture.workspace.Workspace`."""

    def __init__(self, url: str, workspace: str, token: str | None = None, *, batch_size: int = 100,
                 flush_interval: float = 0.2, max_queue: int = 100_000, put_timeout: float = 1.0,
                 on_full: Literal["drop", "raise"] = "drop", on_rejected: Callable[[Rejection], Any] | None = None,
                 timeout: float = 10.0, max_backoff: float = 5.0):
        self.name = workspace
        self.url = url.rstrip("/")
        self.batch_size, self.flush_interval, self.max_queue = batch_size, flush_interval, max_queue
        self.put_timeout, self.on_full, self.on_rejected, self.max_backoff = put_timeout, on_full, on_rejected, max_backoff
        headers = {"content-type": "application/json", "user-agent": "tracemill-remote/1"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        base = f"{self.url}/v1/workspaces/{workspace}"
        self._client = httpx.Client(base_url=base, headers=headers, timeout=timeout)  # the sender thread's
        self._direct = httpx.Client(base_url=base, headers=headers, timeout=timeout)  # callers' (streaming)
        self._direct_lock = threading.Lock()
        self.rejected: list[Rejection] = []
        self.acknowledged = self.dropped = self.abandoned = self.retries = 0
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._enqueued = self._completed = self._flushing = 0
        self._closing = self._give_up = False
        self._thread = threading.Thread(target=self._run, name=f"tracemill-remote-{workspace}", daemon=True)
        self._thread.start()
        atexit.register(self.close, 10.0)

    # ---- the Workspace write API ------------------------------------------------------------------
    def write_trajectories(self, trajectories: Iterable[Trajectory | dict[str, Any]]) -> int:
        """Validate and queue trajectories; returns how many were queued (not yet acknowledged)."""
        return self._validated("trajectory", trajectories)

    def write_outcomes(self, outcomes: Iterable[Outcome | dict[str, Any]]) -> int:
        return self._validated("outcome", outcomes)

    def write_preferences(self, preferences: Iterable[Preference | dict[str, Any]]) -> int:
        return self._validated("preference", preferences)

    def _validated(self, kind: str, records: Iterable[Any]) -> int:
        """Validate in the caller with the server's own validator (so a refusal is an exception here,
        naming the field path, instead of a rejection reported later), then queue; all or nothing."""
        ok, bad = fastschema.validate_many(records, self.name if kind == "trajectory" else None, kind)
        if bad:
            raise ValueError(f"{kind} {bad[0].id or bad[0].index}: {bad[0].error}")
        ident = "trajectory_id" if kind == "trajectory" else "record_id"
        return self._enqueue([self._item(kind, getattr(a, ident), a.json) for a in ok])

    # ---- waiting ----------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is acknowledged (or rejected). False on timeout."""
        with self._cond:
            target = self._enqueued
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._completed >= target, timeout)
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush, then stop the sender. Records still unsent at the timeout are abandoned (counted,
        reported as rejections). Returns True when everything queued was acknowledged or rejected."""
        if self._closing:
            return not self._queue
        ok = self.flush(timeout)
        with self._cond:
            self._closing, self._give_up = True, not ok
            self._cond.notify_all()
        self._thread.join(timeout=None if ok else 2 * self.max_backoff + 1)
        self._client.close()
        self._direct.close()
        atexit.unregister(self.close)
        return ok

    def __enter__(self) -> RemoteWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        return {"queued": len(self._queue), "acknowledged": self.acknowledged, "rejected": len(self.rejected),
                "dropped": self.dropped, "abandoned": self.abandoned, "retries": self.retries}

    # ---- queue ------------------------------------------------------------------------------------
    @staticmethod
    def _item(kind: str, ident: str | None, data: bytes) -> _Item:
        return _Item(kind, ident, data, time.monotonic())

    def _enqueue(self, items: list[_Item]) -> int:
        if not items:
            return 0
        with self._cond:
            if self._closing:
                raise RuntimeError(f"RemoteWorkspace {self.name!r} is closed")
            fits = lambda: not self._queue or len(self._queue) + len(items) <= self.max_queue  # noqa: E731
            if not self._cond.wait_for(fits, self.put_timeout):
                if self.on_full == "raise":
                    raise QueueFull(f"send queue full ({self.max_queue} records): is the server at {self.url} up?")
                self.dropped += len(items)
                reason = f"dropped: client send queue full ({self.max_queue} records)"
            else:
                self._queue.extend(items)
                self._enqueued += len(items)
                self._cond.notify_all()
                return len(items)
        log.warning("tracemill: %s; %d records dropped so far", reason, self.dropped)
        self._report([Rejection(i.kind, i.id, reason) for i in items])
        return 0

    def _report(self, rejections: list[Rejection]) -> None:
        self.rejected.extend(rejections)
        del self.rejected[:-10_000]  # bounded: a long-lived agent must not grow without limit
        for rej in rejections:
            if self.on_rejected is not None:
                try:
                    self.on_rejected(rej)
                except Exception:  # noqa: BLE001 - a user callback must not kill the sender
                    log.exception("tracemill: on_rejected callback failed")

    # ---- the sender thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                left = list(self._queue) if self._give_up else []
                if left:  # close() timed out: report what is left instead of trying it
                    self._queue.clear()
                    self.abandoned += len(left)
                    self._completed += len(left)
                    self._cond.notify_all()
            if left:
                self._report([Rejection(i.kind, i.id, "abandoned at close: not sent") for i in left])
                continue
            with self._cond:
                deadline = self._queue[0].at + self.flush_interval
                while (len(self._queue) < self.batch_size and not self._flushing and not self._closing
                       and time.monotonic() < deadline):
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                chunk = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._cond.notify_all()  # room for writers waiting on a full queue
            for kind in _PATHS:
                batch = [i for i in chunk if i.kind == kind]
                try:
                    if batch:
                        self._send(kind, batch)
                except Exception as exc:  # noqa: BLE001 - the sender thread must survive anything
                    log.exception("tracemill: sending %d %s failed", len(batch), kind)
                    self._report([Rejection(kind, i.id, f"client error: {exc}") for i in batch])
            with self._cond:
                self._completed += len(chunk)
                self._cond.notify_all()

    def _send(self, kind: str, items: list[_Item]) -> None:
        body = b"[" + b",".join(i.data for i in items) + b"]"
        attempt = 0
        while True:
            try:
                resp = self._client.post(f"/{_PATHS[kind]}", content=body)
                error = f"HTTP {resp.status_code}: {_detail(resp)}"
                if resp.status_code == 200:
                    return self._acknowledged(kind, items, resp)
                if resp.status_code == 413 and len(items) > 1:
                    half = len(items) // 2
                    self._send(kind, items[:half])
                    return self._send(kind, items[half:])
                if resp.status_code not in (408, 429) and resp.status_code < 500:
                    return self._report([Rejection(kind, i.id, error) for i in items])
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if self._give_up:
                self.abandoned += len(items)
                return self._report([Rejection(kind, i.id, f"abandoned at close: {error}") for i in items])
            delay = min(self.max_backoff, 0.05 * 2 ** min(attempt, 16)) * random.uniform(0.5, 1.0)
            self.retries += 1
            attempt += 1
            log.debug("tracemill: retrying %d %s in %.2fs after %s", len(items), kind, delay, error)
            with self._cond:
                self._cond.wait_for(lambda: self._give_up, delay)

    def _acknowledged(self, kind: str, items: list[_Item], resp: httpx.Response) -> None:
        try:
            errors = [e for e in resp.json().get("errors") or [] if isinstance(e, dict)]
        except (ValueError, AttributeError):
            errors = []  # a 200 is a durable acknowledgement even if its body is unreadable
        self.acknowledged += len(items) - len(errors)
        self._report([Rejection(kind, e.get("id") or items[e["index"]].id, e.get("error", "rejected"))
                      for e in errors if 0 <= e.get("index", -1) < len(items)])

    # ---- streaming an open trajectory (synchronous: each call returns once durable) --------------
    def append_messages(self, trajectory_id: str, messages: list[dict[str, Any]], *, offset: int | None = None,
                        header: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append messages to an open trajectory on the server; pass `offset` to make retries idempotent."""
        body = {"messages": messages, "offset": offset, "trajectory": header}
        return self._call(f"/trajectories/{trajectory_id}/messages", {k: v for k, v in body.items() if v is not None})

    def close_trajectory(self, trajectory_id: str, **fields: Any) -> dict[str, Any]:
        """Close an open trajectory: the server folds its messages into one landed trajectory."""
        return self._call(f"/trajectories/{trajectory_id}/close", fields)

    def _call(self, path: str, body: dict[str, Any], attempts: int = 8) -> dict[str, Any]:
        for attempt in range(attempts):
            try:
                with self._direct_lock:
                    resp = self._direct.post(path, json=body)
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    resp.raise_for_status()
                    return resp.json()
            except httpx.TransportError:
                if attempt == attempts - 1:
                    raise
            time.sleep(min(self.max_backoff, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        raise RuntimeError(f"{path}: server kept failing after {attempts} attempts")


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))[:500]
    except ValueError:
        return resp.text[:500]


def connect(url: str | None = None, workspace: str | None = None, token: str | None = None,
            **options: Any) -> RemoteWorkspace:
    """A RemoteWorkspace from arguments or `$TRACEMILL_URL`, `$TRACEMILL_WORKSPACE`, `$TRACEMILL_TOKEN`."""
    url = url or os.environ.get("TRACEMILL_URL") or "http://127.0.0.1:8470"
    workspace = workspace or os.environ.get("TRACEMILL_WORKSPACE")
    if not workspace:
        raise ValueError("name the workspace (argument or $TRACEMILL_WORKSPACE)")
    return RemoteWorkspace(url, workspace, token or os.environ.get("TRACEMILL_TOKEN"), **options)
