"""Public entry points: `import_file` (into memory) and `import_paths` (durably into a Workspace).

`import_paths` streams: items are written in batches (one fsync per batch and day, through
`Workspace.write_*`), so a large JSON Lines export never sits in memory as models, and a rich
progress bar follows the bytes read. Files that are not trajectories (a LICENSE next to the data, a
JSON Schema) are skipped with their reason in the summary; bad records are listed with their
position and field path and never stop the rest of the batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.capture.importers.base import Context, ImportResult, Item, RecordError, import_day
from pipeline.capture.importers.detect import UnknownFormatError, detect_format
from pipeline.capture.importers.import_days import ImportDays, index_path
from pipeline.capture.importers.registry import FORMATS
from pipeline.capture.importers.source import Source, not_regular
from pipeline.schema import Outcome, Preference, Trajectory

if TYPE_CHECKING:
    from pipeline.capture.workspace import Workspace


def _resolve(src: Source, fmt: str | None) -> str:
    if fmt is None:
        return detect_format(src)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    return fmt


def iter_file(path: str | os.PathLike, format: str | None = None, *, agent: str | None = None,
              default_time: datetime | None = None) -> tuple[str, Source, Iterator[Item]]:
    """Open, detect and start converting one file; items are produced lazily. Records without
    timestamps start at `default_time`, by default the import day (see `base`)."""
    src = Source.open(path)
    fmt = _resolve(src, format)
    ctx = Context(fmt=fmt, file=src.name, default_time=default_time or import_day(), agent=agent)
    return fmt, src, FORMATS[fmt].convert(src, ctx)


def import_file(path: str | os.PathLike, format: str | None = None, *, agent: str | None = None,
                default_time: datetime | None = None) -> ImportResult:
    """Convert one file. Raises `UnknownFormatError` only when the file as a whole is not a known
    format; individual bad records are returned in `errors`."""
    fmt, src, items = iter_file(path, format, agent=agent, default_time=default_time)
    result = ImportResult(format=fmt, path=str(path))
    for item in items:
        result.add(item)
    return result


@dataclass
class FileSummary:
    path: str
    format: str | None = None
    trajectories: int = 0
    outcomes: int = 0
    preferences: int = 0
    errors: list[RecordError] = field(default_factory=list)
    skipped: str | None = None  # why the file was not imported at all
    timeless: dict[str, int] = field(default_factory=dict)  # day → trajectories placed there for want of a time


@dataclass
class ImportSummary:
    files: list[FileSummary] = field(default_factory=list)

    @property
    def trajectories(self) -> int:
        return sum(f.trajectories for f in self.files)

    @property
    def outcomes(self) -> int:
        return sum(f.outcomes for f in self.files)

    @property
    def preferences(self) -> int:
        return sum(f.preferences for f in self.files)

    @property
    def errors(self) -> list[tuple[str, RecordError]]:
        return [(f.path, e) for f in self.files for e in f.errors]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [(f.path, f.skipped) for f in self.files if f.skipped]

    @property
    def timeless(self) -> dict[str, int]:
        """Day → trajectories without timestamps of their own that landed on it (the import day, or
        the day of their first import), for the summary to say where they went."""
        out: dict[str, int] = {}
        for f in self.files:
            for day, n in f.timeless.items():
                out[day] = out.get(day, 0) + n
        return dict(sorted(out.items()))


def walk(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, directories walked recursively (sorted; hidden entries and symlinked folders
    not followed), and the sub-folders that could not be listed with the reason, so that an unreadable
    folder shows up in the summary instead of silently importing less. FIFOs, devices and sockets
    inside a folder are returned too: `import_paths` skips them with their reason, unopened."""
    out: list[Path] = []
    unreadable: list[tuple[str, str]] = []

    def failed(exc: OSError) -> None:
        unreadable.append((str(exc.filename), f"cannot read folder: {exc.strerror or exc}"))

    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        found: list[Path] = []
        for folder, dirs, files in os.walk(p, onerror=failed):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(folder, f) for f in files if not f.startswith(".")]
        out.extend(sorted(found))
    return out, unreadable


def expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files `walk` finds (unreadable sub-folders left out)."""
    return walk(paths)[0]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Batches:
    """Buffers items per kind and flushes them durably through the workspace."""

    def __init__(self, ws: Workspace, size: int, fs: FileSummary, days: ImportDays | None):
        self.ws, self.size, self.fs, self.days = ws, size, fs, days
        self.buf: dict[type, list[Item]] = {Trajectory: [], Outcome: [], Preference: []}

    def add(self, item: Item) -> None:
        if isinstance(item, RecordError):
            self.fs.errors.append(item)
            return
        if isinstance(item, Trajectory) and item.metadata.get("time_source") == "default":
            item = self.days.place(item) if self.days else item
            self.fs.timeless[item.day] = self.fs.timeless.get(item.day, 0) + 1
        elif isinstance(item, Outcome) and self.days:
            item = self.days.place_outcome(item)
        self.buf[type(item)].append(item)
        if len(self.buf[type(item)]) >= self.size:
            self.flush()

    def flush(self) -> None:
        t, o, p = self.buf[Trajectory], self.buf[Outcome], self.buf[Preference]
        if self.days:
            self.days.save()  # before the trajectories it places: see import_days
        if t:
            self.fs.trajectories += self.ws.write_trajectories(t)  # type: ignore[arg-type]
        if o:
            self.fs.outcomes += self.ws.write_outcomes(o)  # type: ignore[arg-type]
        if p:
            self.fs.preferences += self.ws.write_preferences(p)  # type: ignore[arg-type]
        for v in self.buf.values():
            v.clear()


def import_paths(paths: Iterable[str | os.PathLike], workspace: Workspace, format: str | None = None,
                 progress: bool = True, *, batch_size: int = 500, agent: str | None = None,
                 default_time: datetime | None = None, console: Console | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Import files and directories into `workspace` (durable, append-only landing). Without
    `default_time`, records without timestamps go to the import day, or to the day the same
    trajectory was first imported into this workspace (`ImportDays`), so re-imports never spread
    one trajectory over two day partitions. The bar (and `on_progress(bytes_done, trajectories)`, for
    callers without a terminal) counts trajectories read so far, not records or lines: outcomes and
    errors are not trajectories."""
    files, unreadable = walk(paths)
    days = None if default_time else ImportDays(index_path(workspace), import_day())
    default_time = default_time or (days.today if days else None)
    summary = ImportSummary([FileSummary(path=folder, skipped=why) for folder, why in unreadable])
    total = sum(map(_size, files))
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                   TextColumn("{task.fields[items]} trajectories"), TimeRemainingColumn(),
                   console=console, disable=not progress, transient=False)
    done = 0

    def show(completed: int, trajectories: int) -> None:
        bar.update(task, completed=completed, items=trajectories)
        if on_progress is not None:
            on_progress(completed, trajectories)

    with bar:
        task = bar.add_task("importing", total=total or 1, items=0)
        for path in files:
            before = summary.trajectories  # the files before this one (this one's count is still 0)
            fs = FileSummary(path=str(path))
            summary.files.append(fs)
            bar.update(task, description=path.name)
            try:
                if why := not_regular(path):
                    raise ValueError(why)
                fs.format, src, items = iter_file(path, format, agent=agent, default_time=default_time)
            except (UnknownFormatError, ValueError, OSError) as exc:
                fs.skipped = str(exc)
                done += _size(path)
                show(done, before)
                continue
            batches, read = _Batches(workspace, batch_size, fs, days), 0
            for n, item in enumerate(items, start=1):
                batches.add(item)
                read += isinstance(item, Trajectory)
                if n % 200 == 0:
                    show(done + src.bytes_read, before + read)
            batches.flush()
            done += src.total_bytes
            show(done, summary.trajectories)
    return summary
