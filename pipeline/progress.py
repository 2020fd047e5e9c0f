"""Progress bars for long work, without coupling library code to a terminal: the CLI opens a bar, and
library loops report into whatever bar is open (nothing happens when none is, e.g. under Dagster).

Work made of several stages (a snapshot: ingest, curate, tokenize, write) declares each with `stage(…)`
where it runs, library or CLI alike; under `stage_bars` each becomes its own row with its count, the
time it took and an ETA, and `report` calls inside a stage move that stage's row."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

Sink = Callable[[int, int | None, float | None], None]
Note = Callable[[str], None]  # sets the text shown after a stage's counts (what it found, what it kept)
_stages: ContextVar[Callable[[str, int | None, str], AbstractContextManager[Note]] | None] = ContextVar(
    "tracemill_stages", default=None)

_current: ContextVar[Callable[[int, int | None, float | None], None] | None] = ContextVar("tracemill_progress",
                                                                                      default=None)


def report(done: int, total: int | None = None, loss: float | None = None) -> None:
    """Tell the open progress bar (if any) how far the work is."""
    sink = _current.get()
    if sink is not None:
        sink(done, total, loss)


@contextmanager
def reporting_to(sink: Callable[[int, int | None, float | None], None] | None) -> Iterator[None]:
    """Send `report(done, total, loss)` calls made in the block to `sink`: a terminal bar, or a
    launched training worker's pipe to its parent process (None: report nowhere)."""
    token = _current.set(sink)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def progress_bar(description: str) -> Iterator[None]:
    """A rich bar with step count, last loss and time left, for the duration of the block."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=None, loss="–")

        def sink(done: int, total: int | None, loss: float | None) -> None:
            bar.update(task, completed=done, total=total, loss="–" if loss is None else f"{loss:.3f}")

        with reporting_to(sink):
            yield


@contextmanager
def stage(name: str, total: int | None = None, unit: str = "") -> Iterator[Note]:
    """One named stage of a longer piece of work: its own row under `stage_bars` (the `report(done, total)`
    calls made inside move it), nothing otherwise. Yields `note(text)` to say what the stage found."""
    opener = _stages.get()
    if opener is None:
        yield lambda text: None
        return
    with opener(name, total, unit) as note:
        yield note


@contextmanager
def stage_bars(console: Any = None, enabled: bool = True) -> Iterator[None]:
    """Rows of stages (count done/total with its unit, elapsed time, time left, a note) on `console` (the
    CLI passes stderr, so stdout stays the result); each row is completed when its stage ends. When the
    block fails the rows are taken away, so a user's mistake still reads as its one `error:` line."""
    if not enabled:
        yield
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    def fixed(width: int) -> Column:  # the counts and times never squeeze; a long note is cut at the width
        return Column(no_wrap=True, min_width=width)

    columns = (TextColumn("{task.description:<8}", table_column=fixed(8)), BarColumn(10, table_column=fixed(10)),
               MofNCompleteColumn(table_column=fixed(7)), TextColumn("{task.fields[unit]}", table_column=fixed(12)),
               TimeElapsedColumn(table_column=fixed(7)), TextColumn("eta", table_column=fixed(3)),
               TimeRemainingColumn(table_column=fixed(7)),
               TextColumn("{task.fields[note]}", table_column=Column(no_wrap=True, overflow="ellipsis")))
    with Progress(*columns, console=console, transient=False) as bar:

        @contextmanager
        def row(name: str, total: int | None, unit: str) -> Iterator[Note]:
            task = bar.add_task(name, total=total, unit=unit, note="")

            def sink(done: int, total: int | None, loss: float | None) -> None:
                bar.update(task, completed=done, **({} if total is None else {"total": total}))

            with reporting_to(sink):
                yield lambda text: bar.update(task, note=text)
            finished = bar.tasks[task]  # the stage ended without an error: its row shows it complete
            bar.update(task, total=finished.total if finished.total is not None else finished.completed,
                       completed=finished.total if finished.total is not None else finished.completed)
            bar.stop_task(task)

        token = _stages.set(row)
        try:
            yield
        except BaseException:
            bar.live.transient = True  # cleared from a terminal, never printed to a file …
            bar.live.stop()
            bar.disable = True  # … and no blank line after the error (Progress.stop adds one for files)
            raise
        finally:
            _stages.reset(token)
