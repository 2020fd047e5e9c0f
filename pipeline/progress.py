"""Progress bars for long work, without coupling library code to a terminal: the CLI opens a bar, and
library loops report into whatever bar is open (nothing happens when none is, e.g. under Dagster)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

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
