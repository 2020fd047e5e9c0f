"""Append-only landing area: newline-delimited JSON segments, one file per writer per kind per day.

A write returns only after `fsync`, so an acknowledged record survives `kill -9` or a power cut.
One file per writer means no cross-process locking; a torn last line (a crash mid-write) is
detected on read and quarantined by the lake stage, never breaking a later run.
Each line is an envelope `{"t": received_ns, "w": writer, "r": record}`: `t` orders re-sends of the
same id across writers (the last received wins).

On object storage (a `s3://` data root) there is no append and no fsync: each batch becomes one
immutable object `<kind>/<day>/<writer>-<seq>.ndjson`, acknowledged once the PUT returns (S3 stores a
PUT durably before answering). Readers see the same segments either way.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.storage import is_remote

KINDS = ("trajectory", "outcome", "preference", "otlp_span")
# Kinds whose days are also days of another: OTLP span fragments become trajectories at ingest
# (`pipeline.lake.otlp_assembly`), so a day holding only fragments is a trajectory day to ingest.
FEEDS = {"trajectory": ("otlp_span",)}


def new_writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class LandingWriter:
    """Durable appender for one workspace's landing folder. Thread-safe; one fsync per batch."""

    def __init__(self, root: Path, writer_id: str | None = None):
        self.root = Path(root) if isinstance(root, str) else root  # a Path, or a UPath for object storage
        self.writer_id = writer_id or new_writer_id()
        self._files: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._remote = is_remote(self.root)
        self._seq = 0

    def path_for(self, kind: str, day: str) -> Path:
        return self.root / kind / day / f"{self.writer_id}.ndjson"

    def append(self, kind: str, day: str, records: Iterable[dict[str, Any]]) -> int:
        """Append records (already validated dicts) and fsync before returning their count."""
        return self.append_records(kind, day, [orjson.dumps(rec) for rec in records])

    def append_records(self, kind: str, day: str, records: list[bytes]) -> int:
        """Append records given as compact JSON (no newline inside) and fsync; returns the count.
        Takes bytes so fast validators (msgspec) can land what they checked without a dict round trip."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not records:
            return 0
        now = time.time_ns()
        wid = b',"w":' + orjson.dumps(self.writer_id) + b',"r":'
        payload = memoryview(b"".join(b'{"t":' + str(now + i).encode() + wid + rec + b"}\n"
                                      for i, rec in enumerate(records)))
        if self._remote:
            with self._lock:
                self._seq += 1
                name = f"{self.writer_id}-{self._seq:09d}.ndjson"
            (self.root / kind / day / name).write_bytes(bytes(payload))
            return len(records)
        with self._lock:
            fh = self._files.get((kind, day))
            if fh is None:
                fh = self._open(self.path_for(kind, day))
                self._files[(kind, day)] = fh
            size = os.fstat(fh.fileno()).st_size
            try:
                while payload:  # a raw write may be partial; a short line would be a torn record
                    payload = payload[fh.write(payload):]
                os.fsync(fh.fileno())
            except BaseException:
                self._roll_back(kind, day, fh, size)
                raise
        return len(records)

    def _roll_back(self, kind: str, day: str, fh: Any, size: int) -> None:
        """After a failed append (a full disk), cut the segment back to its last whole record and keep
        appending to it: the next request reuses this file instead of opening a new one per failure.
        If even the cut fails, close it: `_open` starts the next append on a fresh line."""
        try:
            os.ftruncate(fh.fileno(), size)
        except OSError:
            fh.close()
            del self._files[(kind, day)]

    def _open(self, path: Path):
        """Open a segment for appending; a new file's directory entries are fsynced too, so the file
        itself survives a power cut and not just its contents."""
        created = [p for p in (path.parent, path.parent.parent) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        fh = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open for the writer's life
        if existed and path.stat().st_size:
            with open(path, "rb") as probe:
                probe.seek(-1, os.SEEK_END)
                if probe.read(1) != b"\n":
                    fh.write(b"\n")  # a torn last line (a crash, a failed cut) stays one bad line of its own
        for d in ([path.parent] if not existed else []) + [c.parent for c in created]:
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return fh

    def close(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()


@dataclass(frozen=True)
class LandedLine:
    """One line read back from a segment: the envelope fields, or `error` when it did not parse."""

    source: str
    line_no: int
    received_ns: int
    record: Any
    error: str | None = None
    raw: bytes = b""


def segment_files(root: Path, kind: str, day: str | None = None) -> list[Path]:
    base = root / kind
    if not base.exists():
        return []
    pattern = f"{day}/*.ndjson" if day else "*/*.ndjson"
    return sorted(base.glob(pattern))


def landed_days(root: Path, kind: str) -> list[str]:
    """Days with landed records of `kind` (or of a kind that `FEEDS` it)."""
    bases = [root / k for k in (kind, *FEEDS.get(kind, ()))]
    return sorted({p.name for base in bases if base.exists() for p in base.iterdir() if p.is_dir()})


def read_segment(path: Path) -> Iterator[LandedLine]:
    """Yield every line of a segment; unparsable lines (torn writes, garbage) come back with `error` set."""
    with path.open("rb") as fh:
        for no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            complete = raw.endswith(b"\n")
            try:
                env = orjson.loads(raw)
                if not isinstance(env, dict) or "r" not in env:
                    raise ValueError("line is not a landing envelope with an 'r' record")
                yield LandedLine(str(path), no, int(env.get("t", 0)), env["r"])
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                reason = "torn write: last line has no newline" if not complete else f"malformed JSON: {exc}"
                yield LandedLine(str(path), no, 0, None, error=reason, raw=raw)


def read_landed(root: Path, kind: str, day: str | None = None) -> Iterator[LandedLine]:
    for path in segment_files(root, kind, day):
        yield from read_segment(path)
