"""What `make demo` shows while a job runs: a line when each asset step starts and ends (with its time), and
the training steps and evaluation episodes as they go, so minutes of fine-tuning are never silent.

Why an event listener and not Dagster's console logger: the logger at INFO prints a dozen lines per step
(inputs loaded, outputs handled, …) and the demo's summary is the story; the listener sees the same
structured events (`STEP_START`, `STEP_SUCCESS`, `STEP_FAILURE`) as they are stored and prints one line for
each. Training and evaluation report through `pipeline.progress` (TRL's step callback, the online eval's
episode loop), which the in-process executor runs in this thread, so a sink opened here receives them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from pipeline import progress

STEP_EVENTS = {"STEP_START": "▶", "STEP_SUCCESS": "✓", "STEP_FAILURE": "✗"}
PARTS = 4  # progress lines per training run or evaluation sweep: at 25%, 50%, 75% and 100%


class StageLines:
    """One listener for one run: prints step starts/ends and throttled progress reports."""

    def __init__(self, console: Console, clock: Any = time.monotonic) -> None:
        self.console, self.clock = console, clock
        self.started: dict[str, float] = {}
        self.step: str | None = None
        self.sweep: tuple[str | None, int] = (None, 0)  # (step, total) of the sweep being reported
        self.done = self.part = 0  # its last count, and the last quarter printed

    def on_event(self, entry: Any) -> None:
        """Dagster's event listener: called with each EventLogEntry as the run stores it."""
        event = entry.dagster_event
        if event is None or event.event_type_value not in STEP_EVENTS or not event.step_key:
            return
        mark, step = STEP_EVENTS[event.event_type_value], event.step_key
        if event.event_type_value == "STEP_START":
            self.started[step], self.step = self.clock(), step
            self.console.print(f"  {mark} {step}", highlight=False)
            return
        now = self.clock()
        took = now - self.started.pop(step, now)
        self.console.print(f"  {mark} {step} {took:.1f}s", highlight=False)

    def on_progress(self, done: int, total: int | None, loss: float | None) -> None:
        """`pipeline.progress` sink: a line at each quarter of a known total (a training run's steps, an
        evaluation's episodes), so the output grows by a few lines, not one per step."""
        if not total:
            return
        if (self.step, total) != self.sweep or done < self.done:  # a new sweep: next step, next model evaluated
            self.sweep, self.part = (self.step, total), 0
        self.done, part = done, done * PARTS // total
        if part > self.part:
            self.part = part
            tail = "" if loss is None else f", loss {loss:.3f}"
            self.console.print(f"      {self.step or 'step'}: {done}/{total}{tail}", highlight=False)


@contextmanager
def stage_lines(instance: Any, console: Console) -> Iterator[str]:
    """A run id to pass to `execute_in_process(run_id=…)`; its step events and progress reports are printed."""
    run_id = str(uuid.uuid4())  # the form Dagster's own run ids take
    lines = StageLines(console)
    instance.add_event_listener(run_id, lines.on_event)
    with progress.reporting_to(lines.on_progress):
        yield run_id
