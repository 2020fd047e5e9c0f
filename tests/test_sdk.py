"""Capture SDK in local mode: what an agent records is on disk, durable, and reads back intact."""

import multiprocessing as mp
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace, WorkspaceNotFound
from pipeline.schema import Trajectory


def test_workspace_lifecycle(tmp_path):
    with pytest.raises(WorkspaceNotFound, match="tracemill workspace create ft-live"):
        Workspace.open("ft-live", home=tmp_path, create=False)
    ws = Workspace.create("ft-live", home=tmp_path, description="live")
    assert Workspace.list(tmp_path) == ["ft-live"] and ws.info()["description"] == "live"
    with pytest.raises(FileExistsError):
        Workspace.create("ft-live", home=tmp_path)
    with pytest.raises(ValueError, match="lowercase"):
        Workspace.open("Bad Name", home=tmp_path)
    ws.delete()
    assert Workspace.list(tmp_path) == []


def test_recorder_writes_a_full_trajectory(tmp_path):
    ws = Workspace.open("ft-live", home=tmp_path)
    t0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with ws.trajectory("planner", task_id="t1", model="m", started_at=t0, trajectory_id="run-1") as run:
        run.system("be brief")
        run.user("apples?")
        call = run.tool_call("lookup_price", {"item": "apple"}, meta={"input_tokens": 7})
        run.tool_result(call, {"price": 1.25})
        run.assistant("1.25 USD")
        run.outcome("reward", 1.0)
    lines = list(read_landed(ws.landing, "trajectory", "2026-11-20"))
    assert len(lines) == 1 and lines[0].error is None
    traj = Trajectory.model_validate(lines[0].record)
    assert [m.role for m in traj.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert traj.messages[3].name == "lookup_price" and traj.messages[3].tool_call_id == call
    assert orjson.loads(traj.messages[3].content) == {"price": 1.25}
    assert traj.workspace == "ft-live" and traj.ended_at is not None
    outs = [line.record for line in read_landed(ws.landing, "outcome")]
    assert outs[0]["trajectory_id"] == "run-1" and outs[0]["value"] == 1.0


def test_failed_agent_run_is_still_recorded_with_the_error(tmp_path):
    ws = Workspace.open("w", home=tmp_path)
    with pytest.raises(RuntimeError):
        with ws.trajectory("planner", trajectory_id="boom") as run:
            run.user("hi")
            raise RuntimeError("tool server down")
    rec = next(read_landed(ws.landing, "trajectory")).record
    assert rec["metadata"]["error"]["message"] == "tool server down"


def _late_outcome(home: str) -> None:
    Workspace.open("w", home=home).record_outcome("run-x", "success", True, source="human",
                                                  recorded_at=datetime(2026, 11, 25, tzinfo=UTC))


def test_outcome_from_another_process_lands_under_its_recorded_day(tmp_path):
    proc = mp.get_context("spawn").Process(target=_late_outcome, args=(str(tmp_path),))
    proc.start()
    proc.join(60)
    ws = Workspace.open("w", home=tmp_path)
    assert ws.days("outcome") == ["2026-11-25"]
    rec = next(read_landed(ws.landing, "outcome")).record
    assert rec["name"] == "success" and rec["value"] == 1.0 and rec["source"] == "human"


def test_torn_last_line_is_reported_not_fatal(tmp_path):
    ws = Workspace.open("w", home=tmp_path)
    with ws.trajectory("a", trajectory_id="ok", started_at=datetime(2026, 11, 20, tzinfo=UTC)) as run:
        run.user("x")
    path = ws.writer.path_for("trajectory", "2026-11-20")
    ws.close()
    with open(path, "ab") as fh:
        fh.write(b'{"t": 1, "w": "x", "r": {"trajectory_id": "half')
    lines = list(read_landed(ws.landing, "trajectory"))
    assert [line.error is None for line in lines] == [True, False]
    assert lines[1].error.startswith("torn write")
