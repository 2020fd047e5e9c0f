"""Structured logs: every event carries the ids that tie it to data (workspace, trajectory, corpus
version, MLflow run) and to the orchestration run that produced it (Dagster run id, asset, partition).

Why: an on-call engineer starts from one of those ids — "why is trajectory X not in sft@v4?", "what
did run 8f2c… quarantine?" — and greps. `event(log, "quarantined", trajectory_id=…)` renders as
`quarantined trajectory_id=… reason=…` for people (and the Dagster UI, which captures the `tracemill`
logger through dagster.yaml's `managed_python_loggers`) and as one JSON object per line with
`TRACEMILL_LOG_FORMAT=json` for a log pipeline. Ids set with `log_context(...)` (the Dagster assets set
run id, asset and partition) are added to every event inside the block, across threads they start.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from pipeline.settings import environment

ROOT = "tracemill"
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("tracemill_log_context",
                                                                                default=None)
_HANDLER_NAME = "tracemill-structured"
_providers: list[Callable[[], dict[str, Any]]] = []


def get_logger(name: str) -> logging.Logger:
    """`tracemill.<name>`: one tree, so one setting (level, handler, Dagster capture) covers it all."""
    return logging.getLogger(f"{ROOT}.{name}")


@contextmanager
def log_context(**ids: Any) -> Iterator[dict[str, Any]]:
    """Add ids to every event logged inside the block (None values are left out)."""
    merged = {**(_context.get() or {}), **{k: v for k, v in ids.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def add_context_provider(provider: Callable[[], dict[str, Any]]) -> None:
    """Register a function whose ids join every event (the orchestrator's run id, say). The Dagster
    wiring registers one, so the library stays free of Dagster imports. Idempotent per function."""
    if provider not in _providers:
        _providers.append(provider)


def current_context() -> dict[str, Any]:
    ids: dict[str, Any] = {}
    for provider in _providers:
        try:
            ids.update(provider() or {})
        except Exception:  # noqa: BLE001 - a broken provider must never break logging
            continue
    return {**ids, **(_context.get() or {})}


def _render(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return f'"{text}"' if (" " in text or not text) else text


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `msg` with structured fields; the context's ids are attached too."""
    if not logger.isEnabledFor(level):
        return
    ids = {**current_context(), **{k: v for k, v in fields.items() if v is not None}}
    text = " ".join([msg, *(f"{k}={_render(v)}" for k, v in ids.items())])
    logger.log(level, text, extra={"tm_event": msg, "tm_fields": ids}, stacklevel=2)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, msg and every id as its own key."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "tm_fields", None) or current_context()
        obj: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "event": getattr(record, "tm_event", None) or record.getMessage(), "msg": record.getMessage(),
            **fields,
        }
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(obj, default=str).decode()


def configure(fmt: str | None = None, level: str | int | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Install (or replace) the tracemill handler: `fmt` json|text (default `$TRACEMILL_LOG_FORMAT`,
    else text), `level` (default `$TRACEMILL_LOG_LEVEL`, else INFO). Idempotent: calling it again
    swaps the handler instead of duplicating lines."""
    env = environment()  # never fails on a misconfigured profile: the error must still be logged
    fmt = (fmt or env.log_format).lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"TRACEMILL_LOG_FORMAT={fmt!r}: use 'json' or 'text'")
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level or env.log_level)
    return handler


# A library logs, an application decides where logs go: without this, Python's last-resort handler
# would print every warning (each quarantined record) onto a CLI user's terminal.
logging.getLogger(ROOT).addHandler(logging.NullHandler())
