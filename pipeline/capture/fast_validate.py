"""Fast-path validation of trajectories for the capture hot path (server and SDK local mode).

Pydantic stays the public contract, but validating with it costs 5-8x the raw append (see
ARCHITECTURE.md). These msgspec Structs accept a *strict subset* of what `pipeline.schema.Trajectory`
accepts: canonical JSON types only, no unknown fields anywhere, no lax coercions. Whatever they
reject is handed to pydantic, which decides (and words the error with field paths). Whatever they
accept is re-encoded canonically, and that output always validates as the pydantic model
(tests/test_fastschema.py checks this property on generated input), so the lake never quarantines a
record the capture path acknowledged. Both sides apply `pipeline.json_rules` (finite floats, 64-bit
integers, valid Unicode, bounded nesting), and outcomes and preferences are validated here too
(`validate_record`), so the server, the SDK in both modes and ingest share one validator.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from pydantic import ValidationError

from pipeline import json_rules
from pipeline.capture.landing import LandingWriter
from pipeline.json_rules import INT64_MAX, JsonValueError, check, dumps_exact
from pipeline.schema import Outcome, Preference, Trajectory, format_validation_error

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0, le=1.7976931348623157e308)]  # finite: NaN fails ge
# Timestamps stay strings in the canonical RFC 3339 shape, which msgspec's pattern check, Python's
# fromisoformat and pydantic all read the same way. Other shapes (dates alone, unix numbers, more
# than 6 fractional digits, which msgspec would round where pydantic truncates) take the pydantic path.
Timestamp = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)?$")]


def parse_timestamp(text: str) -> datetime:
    """A Timestamp as an aware UTC datetime (naive means UTC, as in schema._as_utc)."""
    try:
        value = datetime.fromisoformat(text)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError(f"timestamp out of range: {exc}") from None


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    pass


class FastToolCall(_Strict):
    id: NonEmpty
    name: NonEmpty
    arguments: Any = "{}"

    def __post_init__(self) -> None:
        # Same rule as schema.ToolCall: arguments stay a JSON *string*; objects are encoded.
        if not isinstance(self.arguments, str):
            self.arguments = "{}" if self.arguments is None else dumps_exact(check(self.arguments, big_ints=True))


class FastStepMeta(_Strict):
    timestamp: Timestamp | None = None
    model: str | None = None
    input_tokens: NonNegInt | None = None
    output_tokens: NonNegInt | None = None
    latency_ms: NonNegFloat | None = None
    cost_usd: NonNegFloat | None = None
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp is not None:
            parse_timestamp(self.timestamp)  # the pattern admits Feb 30: a real date is checked here


class _FastMessage(_Strict, tag_field="role"):
    """Messages are a union tagged by `role`: only the assistant variant has `tool_calls`, which
    enforces schema.Message's role rule without a Python hook per message. A non-assistant message
    that carries `tool_calls` (even an empty list) takes the pydantic path, which decides."""

    content: str | None = None
    reasoning: str | None = None
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    meta: FastStepMeta | None = None


class FastSystem(_FastMessage, tag="system"):
    pass


class FastUser(_FastMessage, tag="user"):
    pass


class FastAssistant(_FastMessage, tag="assistant"):
    tool_calls: list[FastToolCall] | None = None


class FastTool(_FastMessage, tag="tool"):
    pass


FastMessage = FastSystem | FastUser | FastAssistant | FastTool


class FastAgent(_Strict):
    name: NonEmpty
    version: str | None = None


class FastTrajectory(_Strict):
    trajectory_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    agent: FastAgent | str
    workspace: str | None = None
    model: str | None = None
    task_id: str | None = None
    session_id: str | None = None
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    tools: list[dict[str, Any]] = []
    messages: list[FastMessage] = []
    metadata: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.agent.__class__ is str:
            if not self.agent:
                raise ValueError("agent name must not be empty")
            self.agent = FastAgent(name=self.agent)  # type: ignore[arg-type]
        if self.started_at is None:  # fixed now, or every re-read would move the run to another day
            self.started_at = datetime.now(UTC).isoformat()
        if self.ended_at is not None:
            parse_timestamp(self.ended_at)
        if self.metadata:
            check(self.metadata)
        if self.tools:
            check(self.tools)


_decoder = msgspec.json.Decoder(FastTrajectory)
_encoder = msgspec.json.Encoder()


class Accepted(msgspec.Struct, gc=False):
    """A valid record: its trajectory id, landing day, canonical JSON and, for outcomes and
    preferences, its own id. Encoded at once on purpose: keeping thousands of decoded trees alive
    until the batch is written costs more in garbage collection than the validation itself
    (measured 4.6 vs 12-17 us per record)."""

    trajectory_id: str | None
    day: str
    json: bytes
    record_id: str | None = None


class Rejected(msgspec.Struct, gc=False):
    index: int
    id: str | None
    error: str


def _check_workspace(current: str | None, workspace: str | None) -> str | None:
    if workspace is None or current is None:
        return current if workspace is None else workspace
    if current != workspace:
        raise ValueError(f"workspace: {current!r} does not match the target workspace {workspace!r}")
    return current


def _finish(traj: FastTrajectory, workspace: str | None) -> Accepted:
    if workspace is not None and traj.workspace != workspace:
        traj.workspace = _check_workspace(traj.workspace, workspace)
    started: str = traj.started_at  # type: ignore[assignment]  # set in __post_init__
    if started[-1] == "Z" or len(started) < 27 and started[-6] not in "+-":  # UTC or naive: no shift
        datetime.fromisoformat(started)  # still a real date (the pattern admits Feb 30)
        day = started[:10]
    else:
        day = parse_timestamp(started).date().isoformat()
    return Accepted(traj.trajectory_id, day, _encoder.encode(traj))


def _dump(model: Any, **options: Any) -> bytes:
    """The canonical JSON of a validated model. Python callers can still hand over strings with
    unpaired surrogates (which no JSON encoder writes): that refusal is worded with its field path."""
    try:
        return model.model_dump_json(**options).encode()
    except ValueError:  # PydanticSerializationError
        err = json_rules.problem(model.model_dump(), max_depth=None)
        if err is None:
            raise
        raise err from None


def _slow(obj: Any, workspace: str | None) -> Accepted:
    """The authoritative pydantic path: lax coercions, unknown fields into metadata['extra']. A model
    built earlier (the recorder's) is not validated again, but its free-form fields, which the caller
    may have changed since (`set_metadata`), are checked."""
    if isinstance(obj, Trajectory):
        traj = obj
        for name in ("metadata", "tools"):
            if (err := json_rules.problem(getattr(traj, name))) is not None:
                raise JsonValueError((name, *err.path), err.reason)
    else:
        traj = Trajectory.model_validate(obj)
    traj.workspace = _check_workspace(traj.workspace, workspace)
    return Accepted(traj.trajectory_id, traj.day, _dump(traj, exclude_none=True))


def _guess_id(obj: Any, field: str = "trajectory_id") -> str | None:
    tid = obj.get(field) if isinstance(obj, dict) else getattr(obj, field, None)
    return tid if isinstance(tid, str) else None


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return format_validation_error(exc)
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"  # JsonValueError: path: why


def validate_json(raw: bytes | msgspec.Raw, index: int = 0, workspace: str | None = None) -> Accepted | Rejected:
    """Validate one trajectory given as JSON bytes: msgspec first, pydantic when msgspec says no."""
    try:
        return _finish(_decoder.decode(raw), workspace)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError, RecursionError):
        pass
    obj: Any = None
    try:
        obj = json_rules.loads(memoryview(raw) if isinstance(raw, msgspec.Raw) else raw)  # exact integers
        return _slow(obj, workspace)
    except Exception as exc:  # noqa: BLE001 - pydantic lets TypeError/OverflowError from validators through
        return Rejected(index, _guess_id(obj), _describe(exc))


def validate_obj(obj: Any, index: int = 0, workspace: str | None = None) -> Accepted | Rejected:
    """Validate one trajectory given as a dict (an already-validated `Trajectory` is only dumped).
    A value that is not JSON (a set, an object) is rejected here, never in a shared write later."""
    try:
        if isinstance(obj, Trajectory):
            return _slow(obj, workspace)
        try:
            return _finish(msgspec.convert(obj, FastTrajectory), workspace)
        except (msgspec.ValidationError, msgspec.EncodeError, ValueError, TypeError):
            return _slow(obj, workspace)
    except Exception as exc:  # noqa: BLE001
        return Rejected(index, _guess_id(obj), _describe(exc))


_MODELS: dict[str, tuple[type[Outcome] | type[Preference], str]] = {
    "outcome": (Outcome, "outcome_id"), "preference": (Preference, "preference_id")}


def validate_record(kind: str, item: Any, index: int = 0, workspace: str | None = None) -> Accepted | Rejected:
    """Validate one record of any kind (JSON bytes, a dict or a model); outcomes and preferences land
    under the day they were recorded (what lets a sensor see late ones)."""
    if kind == "trajectory":
        is_json = isinstance(item, bytes | bytearray | msgspec.Raw)
        return validate_json(item, index, workspace) if is_json else validate_obj(item, index, workspace)
    model, id_field = _MODELS[kind]
    obj: Any = item
    try:
        if isinstance(item, bytes | bytearray | msgspec.Raw):
            obj = json_rules.loads(memoryview(item) if isinstance(item, msgspec.Raw) else item)
        rec = obj if isinstance(obj, model) else model.model_validate(obj)
        return Accepted(getattr(rec, "trajectory_id", None), rec.recorded_at.date().isoformat(),
                        _dump(rec), getattr(rec, id_field))
    except Exception as exc:  # noqa: BLE001 - pydantic lets TypeError from validators through
        return Rejected(index, _guess_id(obj, id_field), _describe(exc))


def validate_many(items: Iterable[Any], workspace: str | None = None,
                  kind: str = "trajectory") -> tuple[list[Accepted], list[Rejected]]:
    """Validate a batch; bytes/Raw items are JSON, anything else a dict/model. Never raises per item."""
    ok: list[Accepted] = []
    bad: list[Rejected] = []
    for i, item in enumerate(items):
        res = validate_record(kind, item, i, workspace)
        (ok if isinstance(res, Accepted) else bad).append(res)
    return ok, bad


def land(writer: LandingWriter, accepted: Iterable[Accepted], kind: str = "trajectory") -> int:
    """Append validated records, one append + fsync per day touched."""
    by_day: dict[str, list[bytes]] = {}
    for acc in accepted:
        by_day.setdefault(acc.day, []).append(acc.json)
    return sum(writer.append_records(kind, day, recs) for day, recs in by_day.items())


def write_records(workspace: Any, kind: str, records: Iterable[Any], writer: LandingWriter | None = None) -> int:
    """The local SDK's writes: all or nothing (raises ValueError naming the first bad item and its
    field path before anything is written), then one append + fsync per day touched."""
    ok, bad = validate_many(records, workspace.name if kind == "trajectory" else None, kind)
    if bad:
        raise ValueError(f"{kind} {bad[0].id or bad[0].index}: {bad[0].error}")
    return land(writer or workspace.writer, ok, kind)


def write_trajectories(workspace: Any, trajectories: Iterable[Any], writer: LandingWriter | None = None) -> int:
    return write_records(workspace, "trajectory", trajectories, writer)  # `Workspace.write_trajectories`
