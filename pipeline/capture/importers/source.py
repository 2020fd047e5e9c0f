"""Reading an input file as a sequence of JSON records, whatever its layout.

A file is either one JSON document (an object, or an array of records), JSON Lines, or - for the few
formats that are not JSON at all (aider's Markdown chat history) - UTF-8 text, seen as ONE record
holding the whole text so that a text format's `sniff` can recognise it by content. JSON Lines are
read lazily, line by line, so a multi-gigabyte export streams; `bytes_read` lets a progress bar follow.
A line that is not valid JSON becomes a record with `error` set (reported with its line number), so
one bad line never hides the others. The layout is decided from the content, never the extension.
A file that starts like JSON but of which no line parses either (a truncated export, absurd nesting)
is refused as a whole with the parser's line and column: "no format matches" would send the user
looking for the wrong problem. Only regular files are opened: a FIFO would block for ever and a
device may never end.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


class NotJSONError(ValueError):
    """Starts like JSON, yet neither parses as one document nor has a single parsable line."""

    def __init__(self, name: str, exc: orjson.JSONDecodeError) -> None:
        self.line, self.column = exc.lineno, exc.colno
        hint = ("nested deeper than the parser's limit of 1024 levels" if "depth" in exc.msg
                else "the file is truncated: export it again" if "end of data" in exc.msg
                else "repair the file or export it again")
        super().__init__(f"{name}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} ({hint})")


def not_regular(path: str | os.PathLike) -> str | None:
    """Why `path` must not be opened as an input file (a FIFO, a device …), or None for a regular file.
    Decided with `stat`, which never opens the file; a symlink is judged by what it points to."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
    return f"{kind}, not a regular file: skipped without opening it"


@dataclass(frozen=True)
class Record:
    """One top-level record: `index` is 0-based; `line` is the 1-based line for JSON Lines input."""

    index: int
    line: int | None
    value: Any = None
    error: str | None = None


class Source:
    """A file (or an in-memory value) seen as records. Iterating twice re-reads from the start."""

    def __init__(self, path: str | os.PathLike | None = None, value: Any = None, *, kind: str = "json"):
        self.path = Path(path) if path is not None else None
        self.kind = kind  # "json" (one document), "jsonl" or "text" (one str record)
        self.value = value
        self.bytes_read = 0
        self.total_bytes = self.path.stat().st_size if self.path is not None else 0

    @property
    def name(self) -> str | None:
        return self.path.name if self.path is not None else None

    @classmethod
    def from_value(cls, value: Any) -> Source:
        return cls(None, value, kind="json")

    @classmethod
    def open(cls, path: str | os.PathLike) -> Source:
        """Decide JSON vs JSON Lines by content: a first line that is a complete JSON value followed
        by more content means JSON Lines; otherwise the whole file must parse as one document, and if
        it does not, it is read as JSON Lines so every bad line gets reported on its own."""
        path = Path(path)
        if why := not_regular(path):
            raise ValueError(f"{path.name}: {why}")
        with open(path, "rb") as fh:
            first = fh.readline()
            while first and not first.strip():
                first = fh.readline()
            rest = fh.read(4096).strip()
        head = first.lstrip()
        if head[:1] not in (b"{", b"["):
            return cls._text(path, head)
        if rest and _parses(first):
            return cls(path, kind="jsonl")
        try:
            value = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            if not _any_line_parses(path):  # not JSON Lines with bad lines either: one broken document
                raise NotJSONError(path.name, exc) from None
            return cls(path, kind="jsonl")
        src = cls(path, value, kind="json")
        src.bytes_read = src.total_bytes
        return src

    @classmethod
    def _text(cls, path: Path, head: bytes) -> Source:
        """Not JSON: UTF-8 text becomes one str record (text formats sniff it); binary is refused."""
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path.name}: not JSON, JSON Lines or text (starts with {head[:20]!r})") from None
        src = cls(path, text, kind="text")
        src.bytes_read = src.total_bytes
        return src

    def records(self) -> Iterator[Record]:
        """JSON array: its items; JSON object or text: itself; JSON Lines: one record per non-blank line."""
        if self.kind == "text":
            yield Record(0, None, self.value)
            return
        if self.kind == "json":
            items = self.value if isinstance(self.value, list) else [self.value]
            for i, item in enumerate(items):
                yield Record(i, None, item)
            return
        assert self.path is not None
        self.bytes_read = 0
        index = 0
        with open(self.path, "rb") as fh:
            for line_no, raw in enumerate(fh, start=1):
                self.bytes_read += len(raw)
                if not raw.strip():
                    continue
                try:
                    yield Record(index, line_no, orjson.loads(raw))
                except orjson.JSONDecodeError as exc:
                    yield Record(index, line_no, error=f"invalid JSON: {exc}")
                index += 1

    def first_value(self) -> Any:
        """What detection looks at: the whole document, or the first parsable line of JSON Lines."""
        if self.kind in ("json", "text"):
            return self.value
        for rec in self.records():
            if rec.error is None:
                return rec.value
        return None

    def conversations(self) -> Iterator[Record]:
        """For formats whose unit is a bare list of messages: a JSON array of messages is ONE record
        (one conversation), while JSON Lines / arrays of records yield one record each."""
        if self.kind == "json" and isinstance(self.value, list) and self.value \
                and all(isinstance(m, dict) and ("role" in m or "type" in m) for m in self.value):
            yield Record(0, None, self.value)
            return
        yield from self.records()


def _parses(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict | list)
    except orjson.JSONDecodeError:
        return False


def _any_line_parses(path: Path) -> bool:
    """Whether some line is a JSON object or array on its own (stops at the first one)."""
    with open(path, "rb") as fh:
        return any(_parses(raw) for raw in fh if raw.strip())
