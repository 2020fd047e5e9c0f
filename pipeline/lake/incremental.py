"""Incremental ingest of an ever-growing landed kind (outcomes, preferences) into one lake table.

Outcomes accumulate forever, so re-validating every landed line on every run gets slower each day.
Instead the table's Parquet footer carries a cursor, {segment: whole-line bytes consumed}, written in
the same atomic file write as the rows (`storage.write_parquet(..., metadata=)`): the rows and the
cursor that produced them are published together or not at all, so a crash can neither count a line
twice nor skip one. A run reads only the bytes past the cursor, validates those, and merges them into
the previous table with the same rule a full rebuild applies.

A full rebuild is simply a run from an empty cursor over an empty table (same code path, hence the
same result by construction). It happens when there is no cursor (first run, an older file without
one), when the landing root moved, when a segment shrank, vanished or was rewritten, or on request.

Landing segments only grow (locally) or never change (object storage), and `landing.read_segment` is
what parses them; this module reads only the unread bytes of each segment and hands them to it.
The cursor holds one small entry per segment: per writer and day locally, but per batch object on
object storage, where it grows with the number of batches ever landed (as the listing does).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import polars as pl

from pipeline import storage
from pipeline.capture.landing import LandedLine, read_segment, segment_files

CURSOR_KEY = "tracemill.cursor"  # key of the Parquet key-value metadata entry holding the cursor
CURSOR_VERSION = 1


@dataclass
class Segment:
    """How far one landing segment has been consumed.

    `lines` counts line numbers the way `read_segment` does (blank lines included) so that line
    numbers in the quarantine match a full rebuild. `size` is the length last seen: a smaller file
    now means it was rewritten. `open` marks a last consumed line that parsed as a whole envelope but
    had no newline yet (a write caught mid-flight): the only byte that may follow it is that newline.
    A last line that does *not* parse is never consumed: it is re-read next run, since the writer may
    still be completing it, and it is quarantined as a torn write for as long as it stays torn."""

    offset: int = 0
    lines: int = 0
    size: int = 0
    open: bool = False


@dataclass
class Cursor:
    base: str  # the landing folder of the kind: another one (a moved workspace) means a full rebuild
    segments: dict[str, Segment] = field(default_factory=dict)  # by "<day>/<file>" under `base`

    def metadata(self) -> dict[str, str]:
        segs = {k: [s.offset, s.lines, s.size, int(s.open)] for k, s in self.segments.items()}
        return {CURSOR_KEY: orjson.dumps({"v": CURSOR_VERSION, "base": self.base, "segments": segs}).decode()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> Cursor | None:
        try:
            doc = orjson.loads(meta[CURSOR_KEY])
            if doc.get("v") != CURSOR_VERSION:
                return None
            segs = {k: Segment(int(o), int(n), int(s), bool(op)) for k, (o, n, s, op) in doc["segments"].items()}
            return cls(str(doc["base"]), segs)
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            return None  # no cursor, or one this version does not understand: rebuild


def load_cursor(table: storage.AnyPath) -> Cursor | None:
    """The cursor stored in a table's footer; None when the table or its cursor is missing."""
    if not table.exists():
        return None
    return Cursor.from_metadata(storage.parquet_metadata(table))


def _key(path: storage.AnyPath) -> str:
    return f"{path.parent.name}/{path.name}"  # segments are always <kind>/<day>/<file>.ndjson


class _Chunk:
    """Unread bytes of a segment dressed as a path: `read_segment` needs only `open` and `str`, so the
    envelope parsing (and its quarantine reasons) stays in one place."""

    def __init__(self, source: str, data: bytes):
        self.source, self.data = source, data

    def open(self, mode: str = "rb") -> io.BytesIO:
        return io.BytesIO(self.data)

    def __str__(self) -> str:
        return self.source


class Delta:
    """The landed lines a run has to validate, and the cursor to store once they are merged.

    `full` is empty for an incremental run, else why everything is re-read (the caller then starts
    from an empty table and an empty quarantine). Iterate `lines()` once; `cursor` is final after."""

    def __init__(self, root: storage.AnyPath, kind: str, previous: Cursor | None, full: str = ""):
        base = root / kind
        self.paths = segment_files(root, kind)
        self.order = {str(p): i for i, p in enumerate(self.paths)}  # the order a full rebuild reads in
        self.remote = storage.is_remote(base)
        self.sizes: dict[str, int] = {}  # stat'ed sizes of segments already in the cursor
        self.previous = previous or Cursor(str(base))
        self.full = full or self._why_full(str(base), previous)
        if self.full:
            self.previous = Cursor(str(base))
        self.cursor = Cursor(str(base), dict(self.previous.segments))

    def _why_full(self, base: str, prev: Cursor | None) -> str:
        """Checks that need no more than a listing, a stat and one byte per open line."""
        if prev is None:
            return "no cursor"
        if prev.base != base:
            return f"landing moved from {prev.base}"
        listed = {_key(p): p for p in self.paths}
        if gone := sorted(set(prev.segments) - set(listed)):
            return f"segment vanished: {gone[0]}"
        for key, seg in prev.segments.items():
            if self.remote and seg.offset >= seg.size:
                continue  # an object consumed whole never changes
            path = listed[key]
            size = self.sizes[key] = path.stat().st_size
            if size < seg.size:
                return f"segment shrank: {key}"
            if seg.open and size > seg.offset:
                with path.open("rb") as fh:
                    fh.seek(seg.offset)
                    if fh.read(1) != b"\n":
                        return f"segment rewritten: {key}"
        return ""

    def lines(self) -> Iterator[LandedLine]:
        """Every line past the cursor, in the order a full rebuild reads them (segment, then line)."""
        for path in self.paths:
            key = _key(path)
            seg = replace(self.cursor.segments.get(key) or Segment())
            size = self.sizes.get(key)  # stat'ed by _why_full for segments in the cursor (bar consumed objects)
            if key in self.cursor.segments and seg.offset >= (seg.size if size is None else size):
                continue  # nothing new (remote objects consumed whole are not even stat'ed)
            with path.open("rb") as fh:
                fh.seek(seg.offset)  # up to the stat'ed size: what lands meanwhile is the next run's
                data = fh.read(-1 if size is None else size - seg.offset)
            seg.size = seg.offset + len(data)
            if seg.open and data.startswith(b"\n"):  # the newline of a line consumed last run
                data, seg.offset, seg.open = data[1:], seg.offset + 1, False
            cut = data.rfind(b"\n") + 1
            whole, tail = data[:cut], data[cut:]
            yield from self._numbered(str(path), whole, seg.lines)
            seg.offset, seg.lines = seg.offset + cut, seg.lines + whole.count(b"\n")
            for line in self._numbered(str(path), tail, seg.lines):  # at most one line, without newline
                yield line
                if line.error is None:  # whole JSON: final, only its newline can follow
                    seg.offset, seg.lines, seg.open = seg.offset + len(tail), seg.lines + 1, True
            self.cursor.segments[key] = seg

    @staticmethod
    def _numbered(source: str, data: bytes, before: int) -> Iterator[LandedLine]:
        for line in read_segment(_Chunk(source, data)):
            yield replace(line, line_no=line.line_no + before)

    def carried_quarantine(self, path: storage.AnyPath) -> list[dict[str, Any]]:
        """The entries of the previous quarantine file (at `path`) to keep: those of consumed lines.
        A torn last line was not consumed: this run re-read it and quarantines it again only if it is
        still torn. Entries past the stored cursor (a run that crashed before its commit) drop too."""
        if self.full or not path.exists():
            return []
        previous = [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
        consumed = {str(p): self.previous.segments[_key(p)].lines for p in self.paths
                    if _key(p) in self.previous.segments}
        return [q for q in previous if q.get("line", 0) <= consumed.get(str(q.get("source")), -1)]

    def ordered(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Quarantine entries in full-rebuild order (listing order of the segment, then line)."""
        return sorted(items, key=lambda q: (self.order.get(str(q.get("source")), len(self.order)), q.get("line", 0)))


def merge_latest(old: pl.DataFrame, new: pl.DataFrame, key: str, sort: list[str]) -> tuple[pl.DataFrame, int]:
    """One row per `key`, the latest `received_ns` winning (ties: the later row, so new over old and a
    later landed line over an earlier one), sorted by `sort`. Returns the table and how many of the
    new rows repeated a key (already in `old`, or earlier in `new`): the `duplicates` of the run.
    `old` is taken as already one row per key: only its rows whose key reappears are compared, so the
    cost beyond reading and sorting the table is in the size of `new`."""
    dups = new.height - int((~new[key].unique().is_in(old[key].implode())).sum()) if new.height else 0

    def latest(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_row_index("_order").sort("received_ns", "_order").unique(subset=key, keep="last") \
            .drop("_order")

    new = latest(new)
    keys = new.select(key)
    contested = pl.concat([old.join(keys, on=key, how="semi"), new], how="vertical_relaxed")
    merged = pl.concat([old.join(keys, on=key, how="anti"), latest(contested)], how="vertical_relaxed")
    return merged.sort(sort), dups
