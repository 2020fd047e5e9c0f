"""The public data model: what an agent run, a late outcome and a preference look like.

Pydantic is the contract users see (JSON Schema via `tracemill schema`); every capture path and
importer produces these models, so downstream stages never deal with format quirks.
Unknown fields are kept in `metadata["extra"]` rather than rejected: agents evolve faster than schemas.
Every value also obeys `pipeline.json_rules` (finite floats, 64-bit integers, valid Unicode, bounded
nesting): the same models validate at capture and at ingest, so what capture accepts the lake keeps.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.json_rules import INT32_MAX, INT64_MAX, JsonValueError, check, dotted, dumps_exact

Role = Literal["system", "user", "assistant", "tool"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    """Naive timestamps are taken as UTC so that day partitions never depend on the host's zone."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from None


def _free_form(value: Any) -> Any:
    """Free-form JSON (metadata, tool definitions): checked against `pipeline.json_rules`."""
    return check(value)


def _keep_unknown(cls: type[BaseModel], data: Any) -> Any:
    """Move fields the model does not know into metadata['extra'] so nothing a client sent is lost."""
    if not isinstance(data, dict):
        return data
    known = set(cls.model_fields)
    unknown = {k: v for k, v in data.items() if k not in known}
    if not unknown:
        return data
    kept = {k: v for k, v in data.items() if k in known}
    meta = dict(kept.get("metadata") or {})
    meta.setdefault("extra", {}).update(unknown)
    kept["metadata"] = meta
    return kept


class _Model(BaseModel):
    # allow_inf_nan=False: JSON has no NaN or Infinity (orjson would land them as null)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=False, allow_inf_nan=False)


class ToolCall(_Model):
    """A tool call made by the assistant. `arguments` stays a JSON *string* end to end:
    Arrow struct inference silently corrupts argument objects whose shapes differ between rows."""

    id: str = Field(min_length=1, description="Call id; tool results point back to it.")
    name: str = Field(min_length=1, description="Tool name.")
    arguments: str = Field("{}", description="Arguments as a JSON string (objects are encoded).")

    @field_validator("arguments", mode="before")
    @classmethod
    def _encode_arguments(cls, v: Any) -> str:
        if v is None:
            return "{}"
        if isinstance(v, str):
            return v
        return dumps_exact(check(v, big_ints=True))  # integers beyond 64 bits keep their digits, never become floats

    def parsed_arguments(self) -> Any:
        """The arguments decoded; raises ValueError when they are not valid JSON."""
        return orjson.loads(self.arguments)


class StepMeta(_Model):
    """Optional per-step telemetry; any other keys are allowed because providers report different things."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    timestamp: datetime | None = None
    model: str | None = None
    input_tokens: int | None = Field(None, ge=0, le=INT64_MAX)
    output_tokens: int | None = Field(None, ge=0, le=INT64_MAX)
    latency_ms: float | None = Field(None, ge=0)
    cost_usd: float | None = Field(None, ge=0)
    finish_reason: str | None = None

    _utc = field_validator("timestamp")(classmethod(lambda cls, v: _as_utc(v)))

    @model_validator(mode="after")
    def _extras_are_json(self) -> StepMeta:
        check(self.model_extra or {})
        return self


class Message(_Model):
    role: Role
    content: str | None = Field(None, description="Text content; None for a pure tool-call turn.")
    reasoning: str | None = Field(None, description="Reasoning / thinking text, kept apart from content.")
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = Field(None, description="For role=tool: the call this result answers.")
    name: str | None = Field(None, description="For role=tool: the tool's name.")
    is_error: bool = Field(False, description="For role=tool: the tool failed.")
    meta: StepMeta | None = None

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    @model_validator(mode="after")
    def _role_rules(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"only assistant messages carry tool_calls (got role={self.role!r})")
        return self


class AgentInfo(_Model):
    name: str = Field(min_length=1)
    version: str | None = None


class Trajectory(_Model):
    """One agent run. `trajectory_id` is chosen by the client and is the idempotency key:
    re-sending the same id replaces the earlier version (the last one received wins)."""

    trajectory_id: str = Field(min_length=1, max_length=256)
    workspace: str | None = None
    agent: AgentInfo
    model: str | None = None
    task_id: str | None = Field(None, description="Groups attempts at the same task (DPO pairs, eval split).")
    session_id: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list, description="Tool definitions (JSON schema).")
    messages: list[Message] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        data = _keep_unknown(cls, data)
        if isinstance(data, dict) and isinstance(data.get("agent"), str):
            data = {**data, "agent": {"name": data["agent"]}}
        return data

    _utc = field_validator("started_at", "ended_at")(classmethod(lambda cls, v: _as_utc(v)))
    _json = field_validator("tools", "metadata")(classmethod(lambda cls, v: _free_form(v)))

    @property
    def day(self) -> str:
        """The daily partition this trajectory belongs to (UTC date it started)."""
        return self.started_at.date().isoformat()


class Outcome(_Model):
    """A reward, success flag, rating or judge score for a trajectory (optionally one step of it).
    Arrives any time, before or after the trajectory; the join takes the latest per name."""

    outcome_id: str = Field("", description="Stable id; derived from the content when empty.")
    trajectory_id: str = Field(min_length=1)
    step: int | None = Field(None, ge=0, le=INT32_MAX)
    name: str = Field("reward", min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    value: float | None = None
    label: str | None = None
    source: str = Field("env", description="env, human, judge, test, …")
    recorded_at: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        data = _keep_unknown(cls, data)
        if isinstance(data, dict) and isinstance(data.get("value"), bool):
            data = {**data, "value": float(data["value"])}
        return data

    _utc = field_validator("recorded_at")(classmethod(lambda cls, v: _as_utc(v)))
    _json = field_validator("metadata")(classmethod(lambda cls, v: _free_form(v)))

    @model_validator(mode="after")
    def _check(self) -> Outcome:
        if self.value is None and self.label is None:
            raise ValueError("an outcome needs a numeric `value` or a `label`")
        if not self.outcome_id:
            key = f"{self.trajectory_id}|{self.step}|{self.name}|{self.value}|{self.label}|{self.source}|{self.recorded_at.isoformat()}"
            # surrogatepass: an unpaired surrogate is refused with its field path when dumped, not here
            self.outcome_id = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]
        return self


class Preference(_Model):
    """A pairwise judgement: `chosen` is better than `rejected` (both trajectory ids)."""

    preference_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    task_id: str | None = None
    source: str = "human"
    recorded_at: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        return _keep_unknown(cls, data)

    _utc = field_validator("recorded_at")(classmethod(lambda cls, v: _as_utc(v)))
    _json = field_validator("metadata")(classmethod(lambda cls, v: _free_form(v)))

    @model_validator(mode="after")
    def _distinct(self) -> Preference:
        if self.chosen == self.rejected:
            raise ValueError("`chosen` and `rejected` must be different trajectories")
        return self


RECORD_TYPES: dict[str, type[BaseModel]] = {
    "trajectory": Trajectory,
    "outcome": Outcome,
    "preference": Preference,
}


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every public record type, for clients in other languages."""
    return {name: model.model_json_schema() for name, model in RECORD_TYPES.items()}


def format_validation_error(exc: Exception) -> str:
    """One line per problem, each naming the field path, e.g. `messages.2.role: Input should be …`;
    a `json_rules` refusal inside a free-form field extends the path (`metadata.n.3: …`)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        loc, msg = tuple(err.get("loc", ())), err.get("msg")
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, JsonValueError):
            loc, msg = (*loc, *cause.path), cause.reason
        parts.append(f"{dotted(loc) or '<record>'}: {msg}")
    return "; ".join(parts)
