"""Live capture from coding agents: follow Claude Code and Codex session folders, ship what changed.

`tracemill watch` (pipeline.cli.watch) drives a `Watcher`: every pass lists the session files under
each root, skips the ones whose `stat` did not change, and re-imports the others *whole* with the
existing importers (`claude_code`, `codex`). Whole, because both formats spread one conversation
over many lines (an assistant reply is several records that share a message id, a tool result
answers a call made lines earlier): shipping only the new lines would need the importer's state
across passes. The trajectory id is the session id, so each new version replaces the previous one
at ingest (last received wins) and nothing is counted twice.

Only whole lines are shipped: the agent may be in the middle of writing the last one. A file is
shipped through a `Sink` (a local workspace, durable when the write returns, or a capture server,
durable once `flush` saw the acknowledgement) and only then does its cursor advance
(`pipeline.capture.watch_cursor`), so a kill at any point loses nothing.

Polling, not inotify: a pass over a few thousand unchanged files is a few thousand `stat` calls,
works the same on every OS and network filesystem, and needs no extra dependency.

Redaction is a `prepare` hook applied to every trajectory before it is handed to the sink. The hook
is built by the CLI from `pipeline.corpus.redact`, a later stage that capture must not import.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.capture.importers.api import iter_file
from pipeline.capture.importers.base import RecordError
from pipeline.capture.watch_cursor import CursorStore, FileCursor, digest, whole_lines
from pipeline.schema import Outcome, Trajectory

Prepare = Callable[[Trajectory], Trajectory]


@dataclass(frozen=True)
class WatchRoot:
    """A folder to follow: files matching `pattern` anywhere below `path` are `format` sessions."""

    path: Path
    format: str
    pattern: str

    def files(self) -> Iterator[Path]:
        if self.path.is_dir():
            yield from sorted(p for p in self.path.rglob(self.pattern) if p.is_file())


def claude_root(path: str | os.PathLike) -> WatchRoot:
    """Claude Code: `<root>/<cwd>/<session>.jsonl` and 2.x `<session>/subagents/agent-<id>.jsonl`."""
    return WatchRoot(Path(path).expanduser(), "claude_code", "*.jsonl")


def codex_root(path: str | os.PathLike) -> WatchRoot:
    """Codex: `<root>/YYYY/MM/DD/rollout-<ts>-<uuid>.jsonl`."""
    return WatchRoot(Path(path).expanduser(), "codex", "rollout-*.jsonl")


def default_claude_root() -> Path:
    """Where Claude Code keeps sessions; it honours `$CLAUDE_CONFIG_DIR` like the CLI does."""
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude") / "projects"


def default_codex_root() -> Path:
    """Where Codex keeps rollouts; it honours `$CODEX_HOME` like the CLI does."""
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex") / "sessions"


class Sink(Protocol):
    """Where shipped sessions go. `commit` returns None once everything written so far is durable
    on the other side, or the reason it is not (the cursor then stays where it was)."""

    def write_trajectories(self, trajectories: list[Trajectory]) -> int: ...

    def write_outcomes(self, outcomes: list[Outcome]) -> int: ...

    def commit(self) -> str | None: ...


class LocalSink:
    """A local workspace: `Workspace.write_*` fsyncs before returning, so commit has nothing to do."""

    def __init__(self, workspace: Any):
        self.ws = workspace

    def write_trajectories(self, trajectories: list[Trajectory]) -> int:
        return self.ws.write_trajectories(trajectories)

    def write_outcomes(self, outcomes: list[Outcome]) -> int:
        return self.ws.write_outcomes(outcomes)

    def commit(self) -> str | None:
        return None


class RemoteSink(LocalSink):
    """A capture server through `RemoteWorkspace`: commit waits for the server's durable
    acknowledgement. A refusal (4xx: a bad token, a record the server rejects) is reported and the
    cursor stays put, so the file is tried again on the next pass once it is fixed."""

    def __init__(self, remote: Any, timeout: float = 30.0):
        super().__init__(remote)
        self.timeout = timeout
        self._seen_rejections = 0

    def commit(self) -> str | None:
        if not self.ws.flush(self.timeout):
            return f"capture server did not acknowledge within {self.timeout:g}s (will retry)"
        rejected = self.ws.rejected[self._seen_rejections:]
        self._seen_rejections = len(self.ws.rejected)
        return f"server refused {len(rejected)} record(s): {rejected[0].error}" if rejected else None


@dataclass
class WatchStats:
    """What the status line shows."""

    passes: int = 0
    files_seen: int = 0
    sessions: set[str] = field(default_factory=set)  # trajectory ids shipped by this process
    shipped: int = 0  # trajectory versions shipped (a grown session counts again)
    bad_lines: int = 0
    last_error: str | None = None
    last_ship: float | None = None


class Watcher:
    """One `run_once` is one pass over all roots; `run` repeats it until `stop` is set."""

    def __init__(self, roots: list[WatchRoot], sink: Sink, cursor: CursorStore, *,
                 prepare: Prepare | None = None, batch_files: int = 20):
        self.roots, self.sink, self.cursor, self.prepare = roots, sink, cursor, prepare
        self.batch_files = batch_files
        self.stats = WatchStats()
        self._pending: list[tuple[FileCursor, int, str, os.stat_result]] = []

    def run(self, interval: float, stop: threading.Event,
            on_pass: Callable[[WatchStats], None] | None = None) -> None:
        while not stop.is_set():
            self.run_once()
            if on_pass is not None:
                on_pass(self.stats)
            stop.wait(interval)

    def run_once(self) -> int:
        """Ship every new or grown session once; returns how many trajectories were shipped."""
        before = self.stats.shipped
        seen = 0
        with tempfile.TemporaryDirectory(prefix="tracemill-watch-") as tmp:
            for root in self.roots:
                for path in root.files():
                    seen += 1
                    self._visit(path, root, Path(tmp))
                    if len(self._pending) >= self.batch_files:
                        self._commit()
            self._commit()
        self.stats.passes += 1
        self.stats.files_seen = seen
        return self.stats.shipped - before

    def _visit(self, path: Path, root: WatchRoot, tmp: Path) -> None:
        key = os.path.abspath(path)
        cur = self.cursor.get(key)
        try:
            st = path.stat()
            if cur.unchanged(st):
                return
            data = whole_lines(path.read_bytes())
        except OSError as exc:  # deleted or unreadable between the listing and now
            self.stats.last_error = f"{path.name}: {exc}"
            return
        d = digest(data)
        if not data or (len(data) == cur.shipped and d == cur.digest):
            cur.saw(st)  # only a partial line was added: nothing new to ship
            return
        try:
            self._ship(data, path.name, root.format, tmp)
        except Exception as exc:  # noqa: BLE001 - one broken file must not stop the watcher
            cur.error = f"{type(exc).__name__}: {exc}"
            cur.saw(st)  # not retried until the file changes
            self.stats.last_error = f"{path.name}: {cur.error}"
            return
        self._pending.append((cur, len(data), d, st))

    def _ship(self, data: bytes, name: str, fmt: str, tmp: Path) -> None:
        """Import the whole lines of one file (from a private copy under its own name: the importers
        read the session id from it) and hand its trajectories and outcomes to the sink."""
        copy = tmp / name
        copy.write_bytes(data)
        trajectories: list[Trajectory] = []
        outcomes: list[Outcome] = []
        _, _, items = iter_file(copy, fmt)
        for item in items:
            if isinstance(item, RecordError):
                self.stats.bad_lines += 1
            elif isinstance(item, Trajectory):
                trajectories.append(self.prepare(item) if self.prepare else item)
            elif isinstance(item, Outcome):
                outcomes.append(item)
        copy.unlink()
        if trajectories:
            self.sink.write_trajectories(trajectories)
        if outcomes:
            self.sink.write_outcomes(outcomes)
        self.stats.sessions.update(t.trajectory_id for t in trajectories)
        self.stats.shipped += len(trajectories)

    def _commit(self) -> None:
        """Make the shipped files durable on the sink's side, then advance and save their cursors."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        error = self.sink.commit()
        if error:
            self.stats.last_error = error
            for cur, *_ in pending:
                cur.error = error
            return
        for cur, shipped, d, st in pending:
            cur.shipped, cur.digest, cur.error = shipped, d, None
            cur.saw(st)
        self.cursor.save()
        self.stats.last_ship = time.time()
