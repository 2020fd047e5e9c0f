"""The durable per-file cursor of `tracemill watch`: what of each session file has been shipped.

The watcher ships a session file whole (its trajectory id is the session id, so the newest version
replaces the older ones at ingest) and only then advances that file's cursor. The cursor is saved
with write-to-temp, `fsync`, atomic `rename` and an `fsync` of the folder, so after a `kill -9` or a
power cut it is either the old state or the new one, never half of each. A kill between a durable
ship and the cursor save re-sends that one version after the restart: a duplicate that the
last-received-wins ingest folds away. The reverse order (cursor first) could lose a session, so the
order is never reversed.

An entry remembers the shipped length and a hash of the shipped bytes, plus the `stat` fields seen
last (size, mtime, inode), so an unchanged file costs one `stat` per pass and is never re-read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson


@dataclass
class FileCursor:
    """One file's state: `shipped` bytes (always whole lines) with `digest`, and the last `stat` seen."""

    shipped: int = 0
    digest: str = ""
    size: int = -1
    mtime_ns: int = -1
    inode: int = -1
    error: str | None = None  # why the last ship of this file failed (kept until it succeeds)

    def unchanged(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.inode)

    def saw(self, st: os.stat_result) -> None:
        self.size, self.mtime_ns, self.inode = st.st_size, st.st_mtime_ns, st.st_ino


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def whole_lines(data: bytes) -> bytes:
    """The prefix of `data` up to its last newline: a line still being written is left for later."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


class CursorStore:
    """Cursor entries keyed by absolute file path, persisted as one JSON document at `path`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.files: dict[str, FileCursor] = {}
        if self.path.exists():
            raw = orjson.loads(self.path.read_bytes())
            self.files = {k: FileCursor(**v) for k, v in (raw.get("files") or {}).items()}

    def get(self, file: str) -> FileCursor:
        return self.files.setdefault(file, FileCursor())

    def save(self) -> None:
        """Atomically replace the cursor file, durably (see the module docstring)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps({"version": 1, "files": {k: asdict(v) for k, v in sorted(self.files.items())}})
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
