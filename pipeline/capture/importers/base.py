"""Shared machinery of the importers: results, record errors with field paths, ids, times, trajectories.

Every format converter is a generator of *items* (trajectories, outcomes, preferences and record
errors) so that `import_paths` can stream a large JSONL file into the workspace in batches while
`import_file` simply collects everything. A record that cannot be converted becomes a `RecordError`
naming its position and the field path that failed; it never stops the rest of the file.

Determinism: ids come from the source's own ids or from a content hash. A source without timestamps
starts at the beginning of the day it is imported (`import_day()`), plus `metadata["time_source"] =
"default"`, so it lands in a day partition the pipeline ingests (the Unix epoch used before sat
outside every partition). Day partitions dedupe by id only within a day, so a re-import on a later
day must not move it: `import_paths` remembers the day each such trajectory was first imported into
the workspace (`pipeline.capture.importers.import_days`) and places re-imports on that day. Callers
who want another day pass `default_time=` explicitly. `DEFAULT_TIME` (the epoch) remains only as the
sort key and fallback of code that orders records without times.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.capture.importers.source import Record
from pipeline.jsonio import dumps_json
from pipeline.schema import Message, Outcome, Preference, Trajectory, format_validation_error

DEFAULT_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def import_day(now: datetime | None = None) -> datetime:
    """Midnight (UTC) of the import day: every timeless record of one import gets the same start,
    so a file re-imported the same day is byte-identical."""
    now = now or datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


class FieldError(ValueError):
    """A conversion failure at `path` (dotted, relative to the record) with a human reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path or '<record>'}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class RecordError:
    """One record that did not import: `index` (0-based record number in the file), `line` (1-based,
    JSONL only), `field` (dotted path inside the record) and `reason`."""

    index: int | None
    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else f"record {self.index}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


Item = Trajectory | Outcome | Preference | RecordError


@dataclass
class ImportResult:
    """Everything one file produced; `errors` lists the records that did not import."""

    format: str
    path: str | None = None
    trajectories: list[Trajectory] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    preferences: list[Preference] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    def add(self, item: Item) -> None:
        bucket = {Trajectory: self.trajectories, Outcome: self.outcomes, Preference: self.preferences,
                  RecordError: self.errors}[type(item)]
        bucket.append(item)

    @property
    def n_messages(self) -> int:
        return sum(len(t.messages) for t in self.trajectories)

    @property
    def n_tool_calls(self) -> int:
        return sum(len(m.tool_calls) for t in self.trajectories for m in t.messages)


@dataclass(frozen=True)
class Context:
    """Per-file settings handed to converters."""

    fmt: str
    file: str | None = None
    default_time: datetime = field(default_factory=import_day)
    agent: str | None = None


def join_path(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p not in (None, ""))


def describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return format_validation_error(exc)
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def at(*parts: Any) -> Iterator[None]:
    """Prefix the path of any failure inside the block, so errors name the full field path."""
    prefix = join_path(*parts)
    try:
        yield
    except FieldError as exc:
        raise FieldError(join_path(prefix, exc.path), exc.reason) from None
    except ValidationError as exc:  # pydantic locations are relative to the model built here
        errs = exc.errors()
        if len(errs) == 1:
            loc = join_path(*(p for p in errs[0].get("loc", ()) if not str(p).startswith("function-")))
            raise FieldError(join_path(prefix, loc), str(errs[0].get("msg"))) from None
        raise FieldError(prefix, format_validation_error(exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise FieldError(prefix, describe(exc)) from None


def isolated(rec: Record, path: str, thunk: Callable[[], Iterable[Item]]) -> Iterator[Item]:
    """Run one conversion: all of its items, or a single RecordError naming `path.<field>`."""
    try:
        with at(path):
            items = list(thunk())
    except FieldError as exc:
        yield RecordError(rec.index, rec.line, exc.path, exc.reason)
        return
    yield from items


def per_record(records: Iterable[Record], fn: Callable[[Any, Record], Iterable[Item]]) -> Iterator[Item]:
    """Convert records one by one; a record either yields all its items or one RecordError."""
    for rec in records:
        if rec.error is not None:
            yield RecordError(rec.index, rec.line, "", rec.error)
            continue
        yield from isolated(rec, "", lambda rec=rec: fn(rec.value, rec))


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text; falls back to the stdlib for what orjson refuses (integers beyond 64 bits)."""
    try:
        option = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS if sort_keys else 0
        return orjson.dumps(value, option=option, default=str).decode()
    except TypeError:
        return dumps_json(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys, default=str)


def content_hash(value: Any, n: int = 20) -> str:
    """Hash of a JSON value that does not depend on key order or whitespace."""
    return hashlib.sha1(dumps(value, sort_keys=True).encode()).hexdigest()[:n]


def stable_id(fmt: str, *parts: Any) -> str:
    return ":".join([fmt, *(str(p) for p in parts if p not in (None, ""))])[:256]


def parse_time(value: Any) -> datetime | None:
    """ISO strings (naive = UTC), or epoch numbers in s/ms/us/ns (OTLP nanos may come as strings)."""
    if value in (None, "", 0, "0"):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        v = float(value)
        scale = 1e9 if v > 1e17 else 1e6 if v > 1e14 else 1e3 if v > 1e11 else 1.0
        return datetime.fromtimestamp(v / scale, tz=UTC)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    raise ValueError(f"unrecognised timestamp {value!r}")


def loads_layers(value: Any, max_depth: int = 3) -> Any:
    """Decode a value that may be JSON-encoded once or several times (Langfuse stores
    `metadata` and `input` as JSON strings of JSON strings). Non-JSON strings come back unchanged."""
    for _ in range(max_depth):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text or text[0] not in '{["':
            return value
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return value
    return value


def as_text(value: Any) -> str | None:
    """Content that is not text (tool results as objects) is kept as compact JSON text."""
    if value is None or isinstance(value, str):
        return value
    return dumps(value)


def function_tool(spec: dict[str, Any]) -> dict[str, Any]:
    """Tool definitions in the OpenAI `{"type": "function", "function": {...}}` shape the chat
    templates expect; flat `{name, description, parameters}` (and Anthropic `input_schema`) are wrapped."""
    if spec.get("type") == "function" and isinstance(spec.get("function"), dict):
        return spec
    fn = {k: v for k, v in spec.items() if k != "type"}
    if "input_schema" in fn and "parameters" not in fn:
        fn["parameters"] = fn.pop("input_schema")
    return {"type": "function", "function": fn}


def build_trajectory(ctx: Context, *, trajectory_id: str, messages: Sequence[Message], original: Any,
                     agent: str | None = None, agent_version: str | None = None, model: str | None = None,
                     task_id: Any = None, session_id: Any = None, started_at: Any = None,
                     ended_at: Any = None, tools: Sequence[dict[str, Any]] = (),
                     notes: dict[str, int] | None = None, **metadata: Any) -> Trajectory:
    """A Trajectory with the provenance every importer records: `metadata.source` (format),
    `metadata.original` (raw record or its non-message parts) and `metadata.time_source`."""
    start = parse_time(started_at)
    meta: dict[str, Any] = {"source": ctx.fmt}
    if ctx.file:
        meta["source_file"] = ctx.file
    meta["time_source"] = "source" if start else "default"
    meta.update({k: v for k, v in metadata.items() if v is not None})
    if notes:
        meta["import_notes"] = dict(sorted(notes.items()))
    meta["original"] = original
    return Trajectory(
        trajectory_id=trajectory_id,
        agent={"name": ctx.agent or agent or ctx.fmt, "version": agent_version},
        model=model, task_id=None if task_id is None else str(task_id),
        session_id=None if session_id is None else str(session_id),
        started_at=start or ctx.default_time, ended_at=parse_time(ended_at),
        tools=[function_tool(t) for t in tools], messages=list(messages), metadata=meta)


def build_outcome(traj: Trajectory, name: str, value: Any = None, *, label: str | None = None,
                  source: str = "env", recorded_at: Any = None, step: int | None = None,
                  **metadata: Any) -> Outcome:
    """Outcomes get a deterministic `recorded_at` (the source's, else the trajectory's end or start)
    so their content-derived `outcome_id` is the same on every import."""
    when = parse_time(recorded_at) or traj.ended_at or traj.started_at
    if isinstance(value, bool):
        value = float(value)
    return Outcome(trajectory_id=traj.trajectory_id, name=name, value=value, label=label, source=source,
                   recorded_at=when, step=step, metadata={k: v for k, v in metadata.items() if v is not None})


def build_preference(chosen: Trajectory, rejected: Trajectory, *, source: str, task_id: Any = None,
                     **metadata: Any) -> Preference:
    pid = content_hash([chosen.trajectory_id, rejected.trajectory_id, source])
    return Preference(preference_id=pid, chosen=chosen.trajectory_id, rejected=rejected.trajectory_id,
                      task_id=None if task_id is None else str(task_id), source=source,
                      recorded_at=chosen.started_at, metadata=metadata)
