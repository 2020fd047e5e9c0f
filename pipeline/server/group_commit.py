"""Group commit for the capture server: many concurrent requests, one append + one fsync per file.

An fsync costs ~1-2 ms here whatever its size, so fsyncing per request caps a server at a few hundred
requests/s. Instead every request hands its already-encoded records to one writer thread and awaits
a future; the thread drains everything queued while the previous fsync ran, appends it per landing
file, fsyncs each file once and only then resolves the futures. A request is therefore acknowledged
only after its records are durable, and under load the fsync cost is shared by all waiting requests.
The thread also runs workspace deletions (`call`), so they are ordered with the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.capture.landing import LandingWriter
from pipeline.capture.workspace import Workspace, WorkspaceNotFound, home_dir
from pipeline.storage import is_remote

# ops: ("land", workspace, kind, day, [record JSON bytes]) | ("file", path, payload) | ("call", fn)
Op = tuple[Any, ...]


@dataclass
class _Job:
    ops: list[Op]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    error: BaseException | None = None
    result: Any = None


@dataclass
class CommitStats:
    """Counters exposed on /healthz: how well requests are being grouped."""

    commits: int = 0
    jobs: int = 0
    records: int = 0
    fsyncs: int = 0
    failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def fsync_dir(path: Path) -> None:
    """Make a new directory entry (a new segment file) durable, not only the file's contents."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durably(path: Path, payload: bytes) -> None:
    """Append whole lines to `path` and fsync. If an earlier crash left a torn last line, start on a
    fresh line so the torn fragment stays one bad line instead of corrupting this record."""
    new, new_dir = not path.exists(), not path.parent.exists()
    if new_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload
        view = memoryview(payload)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:  # a full disk: cut back what was written, nothing of it was acknowledged
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)
    if new_dir:
        fsync_dir(path.parent.parent)


class GroupCommitter:
    """The single writer thread of a server process (one landing segment per workspace/kind/day)."""

    def __init__(self, home: str | os.PathLike | None):
        self.home = home_dir(home)
        self.stats = CommitStats()
        self._q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writers: dict[str, LandingWriter] = {}
        self._synced_dirs: set[tuple[str, str, str]] = set()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tracemill-commit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then close every segment."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None

    # ---- API used by request handlers ---------------------------------------------------------
    async def submit(self, ops: list[Op]) -> Any:
        """Queue ops and wait until they are durable (raises what the write raised)."""
        loop = asyncio.get_running_loop()
        job = _Job(ops, loop, loop.create_future())
        self._q.put(job)
        return await asyncio.shield(job.future)

    async def land(self, workspace: str, groups: dict[tuple[str, str], list[bytes]]) -> None:
        ops = [("land", workspace, kind, day, recs) for (kind, day), recs in groups.items() if recs]
        if ops:
            await self.submit(ops)

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await self.submit([("call", fn)])

    def drop_workspace(self, workspace: str) -> None:
        """Close a workspace's segment (committer thread only: use via `call`)."""
        writer = self._writers.pop(workspace, None)
        if writer is not None:
            writer.close()
        self._synced_dirs = {k for k in self._synced_dirs if k[0] != workspace}

    # ---- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            jobs = [self._q.get()]
            while True:
                try:
                    jobs.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = any(j is None for j in jobs)
            pending: list[_Job] = []
            for job in jobs:
                if job is None:
                    continue
                if any(op[0] == "call" for op in job.ops):  # keep calls ordered with the writes
                    self._commit(pending)
                    pending = []
                    self._commit([job])
                else:
                    pending.append(job)
            self._commit(pending)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, workspace: str) -> LandingWriter:
        writer = self._writers.get(workspace)
        if writer is None:
            ws = Workspace(workspace, self.home)  # the data root (local or s3://) comes from the profile
            if not ws.exists():
                raise WorkspaceNotFound(f"workspace {workspace!r} does not exist")
            writer = self._writers[workspace] = LandingWriter(ws.landing)
        return writer

    def _land(self, workspace: str, kind: str, day: str, records: list[bytes]) -> None:
        writer = self._writer(workspace)
        writer.append_records(kind, day, records)  # a failed append rolls itself back (LandingWriter)
        self.stats.fsyncs += 1
        self.stats.records += len(records)
        if (workspace, kind, day) not in self._synced_dirs and not is_remote(writer.root):  # object stores: no dirs
            seg = writer.path_for(kind, day)
            for d in (seg.parent, seg.parent.parent, seg.parent.parent.parent):
                fsync_dir(d)
            self._synced_dirs.add((workspace, kind, day))

    def _commit(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        landing: dict[tuple[str, str, str], tuple[list[bytes], list[_Job]]] = {}
        files: dict[Path, tuple[list[bytes], list[_Job]]] = {}
        for job in jobs:
            for op in job.ops:
                if op[0] == "land":
                    recs, owners = landing.setdefault((op[1], op[2], op[3]), ([], []))
                    recs.extend(op[4])
                elif op[0] == "file":
                    recs, owners = files.setdefault(op[1], ([], []))
                    recs.append(op[2])
                else:
                    self._run_call(job, op[1])
                    continue
                owners.append(job)
        for (ws, kind, day), (recs, owners) in landing.items():
            self._guard(owners, lambda ws=ws, kind=kind, day=day, recs=recs: self._land(ws, kind, day, recs))
        for path, (payloads, owners) in files.items():
            self._guard(owners, lambda path=path, payloads=payloads: append_durably(path, b"".join(payloads)))
            self.stats.fsyncs += 1
        self.stats.commits += 1
        self.stats.jobs += len(jobs)
        for job in jobs:
            try:
                job.loop.call_soon_threadsafe(_resolve, job)
            except RuntimeError:  # the loop is gone (server shutting down): nobody is waiting
                pass

    def _guard(self, owners: list[_Job], fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to every request that shared the write
            self.stats.failures += 1
            for job in owners:
                job.error = job.error or exc

    def _run_call(self, job: _Job, fn: Callable[[], Any]) -> None:
        try:
            job.result = fn()
        except BaseException as exc:  # noqa: BLE001
            job.error = exc


def _resolve(job: _Job) -> None:
    if job.future.done():
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)
