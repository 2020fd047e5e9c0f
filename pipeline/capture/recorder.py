"""The recorder an agent developer holds while an agent runs: one context manager per trajectory.

    with ws.trajectory("planner", task_id="t-17", model="gpt-x", tools=TOOLS) as run:
        run.system("You are …"); run.user("What does …?")
        call = run.tool_call("lookup_price", {"item": "apple"})
        run.tool_result(call, "1.25")
        run.assistant("It costs 1.25")
    ws.record_outcome(run.trajectory_id, "reward", 1.0)   # later, from anywhere

The trajectory is written durably when the block exits (also when the agent raised: the error is
kept in metadata, because failed runs are training signal too).
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import orjson

from pipeline.schema import AgentInfo, Message, Outcome, Preference, StepMeta, ToolCall, Trajectory, utcnow


class CaptureSink(Protocol):
    """What a recorder writes to: the local `Workspace` and the remote SDK both are one. Declared here,
    below both, so the recorder never needs to know which one it holds."""

    name: str

    def write_trajectories(self, trajectories: Iterable[Trajectory | dict[str, Any]]) -> int: ...

    def write_outcomes(self, outcomes: Iterable[Outcome | dict[str, Any]]) -> int: ...

    def write_preferences(self, preferences: Iterable[Preference | dict[str, Any]]) -> int: ...


class TrajectoryRecorder:
    def __init__(self, workspace: CaptureSink, agent: str, *, agent_version: str | None = None,
                 trajectory_id: str | None = None, task_id: str | None = None, model: str | None = None,
                 session_id: str | None = None, tools: list[dict[str, Any]] | None = None,
                 started_at: datetime | None = None, metadata: dict[str, Any] | None = None):
        self.workspace = workspace
        self.trajectory_id = trajectory_id or uuid.uuid4().hex
        self._traj = Trajectory(
            trajectory_id=self.trajectory_id, workspace=workspace.name,
            agent=AgentInfo(name=agent, version=agent_version), model=model, task_id=task_id,
            session_id=session_id, tools=tools or [], started_at=started_at or utcnow(),
            metadata=dict(metadata or {}),
        )
        self._outcomes: list[Outcome] = []
        self._calls = 0
        self.written = False

    # ---- messages -----------------------------------------------------------------------------
    @property
    def messages(self) -> list[Message]:
        return self._traj.messages

    def record_message(self, message: Message | dict[str, Any]) -> Message:
        msg = message if isinstance(message, Message) else Message.model_validate(message)
        self._traj.messages.append(msg)
        return msg

    def system(self, content: str) -> Message:
        return self.record_message(Message(role="system", content=content))

    def user(self, content: str) -> Message:
        return self.record_message(Message(role="user", content=content))

    def assistant(self, content: str | None = None, *, reasoning: str | None = None,
                  tool_calls: list[ToolCall | dict[str, Any]] | None = None,
                  meta: StepMeta | dict[str, Any] | None = None) -> Message:
        return self.record_message({"role": "assistant", "content": content, "reasoning": reasoning,
                                    "tool_calls": tool_calls or [], "meta": meta})

    def record_tool_call(self, name: str, arguments: dict[str, Any] | str | None = None, *,
                         call_id: str | None = None, content: str | None = None,
                         reasoning: str | None = None, meta: StepMeta | dict[str, Any] | None = None) -> str:
        """Record an assistant turn that calls one tool; returns the call id for the result."""
        self._calls += 1
        call_id = call_id or f"call_{self._calls}"
        self.assistant(content, reasoning=reasoning, meta=meta,
                       tool_calls=[ToolCall(id=call_id, name=name, arguments=arguments)])
        return call_id

    def record_tool_result(self, call_id: str, content: Any, *, is_error: bool = False,
                           name: str | None = None) -> Message:
        if name is None:
            name = next((c.name for m in reversed(self.messages) for c in m.tool_calls if c.id == call_id), None)
        text = content if isinstance(content, str) else _to_json(content)
        return self.record_message(Message(role="tool", content=text, tool_call_id=call_id, name=name,
                                           is_error=is_error))

    tool_call = record_tool_call
    tool_result = record_tool_result

    def record_outcome(self, name: str = "reward", value: float | bool | None = None, *,
                       label: str | None = None, step: int | None = None, source: str = "env") -> None:
        """An outcome known while the run is still open; written with the trajectory."""
        self._outcomes.append(Outcome(trajectory_id=self.trajectory_id, name=name, value=value,
                                      label=label, step=step, source=source))

    outcome = record_outcome

    @property
    def ended_at(self) -> datetime | None:
        return self._traj.ended_at

    @ended_at.setter
    def ended_at(self, value: datetime) -> None:
        """Set when the run ended (otherwise the time the block exits)."""
        self._traj.ended_at = value

    def set_metadata(self, **values: Any) -> None:
        self._traj.metadata.update(values)

    # ---- lifecycle ------------------------------------------------------------------------------
    def finish(self, ended_at: datetime | None = None) -> Trajectory:
        """Write the trajectory (durable on return). Idempotent: a second call does nothing.
        `ended_at` defaults to now; pass it when replaying recorded runs so re-imports are identical."""
        if not self.written:
            self._traj.ended_at = ended_at or self._traj.ended_at or utcnow()
            self.workspace.write_trajectories([self._traj])
            if self._outcomes:
                self.workspace.write_outcomes(self._outcomes)
            self.written = True
        return self._traj

    def __enter__(self) -> TrajectoryRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self._traj.metadata["error"] = {
                "type": exc_type.__name__, "message": str(exc),
                "traceback": "".join(traceback.format_exception(exc_type, exc, tb))[-4000:],
            }
        self.finish()


def _to_json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class CaptureMethods:
    """The convenience half of the capture API, shared by the local `Workspace` and the remote one: both
    only have to provide `name`, `write_outcomes` and `write_preferences` (and `write_trajectories`)."""

    def record_outcome(self, trajectory_id: str, name: str = "reward", value: float | bool | None = None, *,
                       label: str | None = None, step: int | None = None, source: str = "env",
                       recorded_at: datetime | None = None, **metadata: Any) -> Outcome:
        """Record an outcome for a trajectory, from any process, at any time (before or after it lands)."""
        out = Outcome(trajectory_id=trajectory_id, name=name, value=value, label=label, step=step,
                      source=source, recorded_at=recorded_at or utcnow(), metadata=metadata)
        self.write_outcomes([out])  # type: ignore[attr-defined]
        return out

    def record_preference(self, chosen: str, rejected: str, *, task_id: str | None = None,
                          source: str = "human", recorded_at: datetime | None = None,
                          preference_id: str | None = None) -> Preference:
        extra = {"preference_id": preference_id} if preference_id else {}
        pref = Preference(chosen=chosen, rejected=rejected, task_id=task_id, source=source,
                          recorded_at=recorded_at or utcnow(), **extra)
        self.write_preferences([pref])  # type: ignore[attr-defined]
        return pref

    def trajectory(self, agent: str, **fields: Any) -> TrajectoryRecorder:
        """Context manager recording one agent run; see `TrajectoryRecorder`."""
        return TrajectoryRecorder(self, agent=agent, **fields)  # type: ignore[arg-type]
