"""Landing → lake → join: validation, quarantine with reasons, idempotent re-sends, late outcomes."""

from datetime import UTC, datetime, timedelta

import orjson
import polars as pl

from pipeline.capture.workspace import Workspace
from pipeline.lake import ingest as lake
from pipeline.lake import join

DAY = "2026-11-20"
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)


def _record(ws, tid, answer="42", task="t1", agent="planner"):
    with ws.trajectory(agent, trajectory_id=tid, task_id=task, started_at=T0) as run:
        run.user("q")
        call = run.tool_call("calculator", {"expression": "6*7"})
        run.tool_result(call, "42")
        run.assistant(answer)


def test_ingest_validates_quarantines_and_collapses_resends(tmp_path):
    ws = Workspace.open("w", home=tmp_path)
    _record(ws, "a")
    _record(ws, "b")
    _record(ws, "a", answer="forty-two")  # re-send: the last one received wins
    ws.writer.append("trajectory", DAY, [{"trajectory_id": "bad", "agent": "x", "messages": [{"role": "robot"}]}])
    path = ws.writer.path_for("trajectory", DAY)
    with open(path, "ab") as fh:
        fh.write(b'{"t":1,"r":{"trajectory_id":"torn"')
    df, stats = lake.ingest_trajectories(ws, DAY)
    assert sorted(df["trajectory_id"]) == ["a", "b"]
    assert df.filter(pl.col("trajectory_id") == "a")["final_answer"].item() == "forty-two"
    assert (stats.valid, stats.quarantined, stats.duplicates) == (3, 2, 1)
    q = lake.read_quarantine(ws)
    reasons = sorted(item["reason"] for item in q)
    assert reasons[0].startswith("messages.0.role") and reasons[1].startswith("torn write")
    row = df.filter(pl.col("trajectory_id") == "b").row(0, named=True)
    assert (row["n_messages"], row["n_tool_calls"], row["n_assistant"]) == (4, 1, 2)
    msgs = orjson.loads(row["messages_json"])
    assert msgs[1]["tool_calls"][0]["arguments"] == '{"expression":"6*7"}'  # still a JSON string
    # idempotent: a second pass gives the same partition
    again, _ = lake.ingest_trajectories(ws, DAY)
    assert again.drop("received_ns").equals(df.drop("received_ns"))
    assert lake.workspace_counts(ws)["trajectories"] == 2


def test_join_takes_latest_outcome_including_early_and_late_ones(tmp_path):
    ws = Workspace.open("w", home=tmp_path)
    ws.record_outcome("a", "reward", 0.0, recorded_at=T0 - timedelta(hours=1))  # before the trajectory
    _record(ws, "a")
    _record(ws, "b")
    _record(ws, "c")
    ws.record_outcome("a", "reward", 1.0, recorded_at=T0 + timedelta(days=2))   # corrected, late
    ws.record_outcome("b", "success", True, label="passed", recorded_at=T0 + timedelta(days=1))
    ws.record_outcome("c", "reward", 0.5, step=1, recorded_at=T0)
    traj, _ = lake.ingest_trajectories(ws, DAY)
    outs, ost = lake.ingest_outcomes(ws)
    assert ost.valid == 4 and outs.height == 4
    joined = join.join_outcomes(traj, outs).sort("trajectory_id")
    assert joined["reward"].to_list() == [1.0, None, None]
    assert joined["success"].to_list() == [None, 1.0, None]
    assert joined["success_label"].to_list() == [None, "passed", None]
    assert orjson.loads(joined["step_outcomes_json"][2]) == [{"step": 1, "name": "reward", "value": 0.5, "label": None}]
    cov = join.coverage(joined)
    assert cov["coverage"] == round(2 / 3, 4) and cov["by_name"] == {"reward": 1, "success": 1}


def test_join_without_any_outcome_still_has_filter_columns(tmp_path):
    ws = Workspace.open("w", home=tmp_path)
    _record(ws, "a")
    traj, _ = lake.ingest_trajectories(ws, DAY)
    joined = join.join_day(ws, DAY, pl.DataFrame(schema=lake.OUTCOME_SCHEMA))
    assert joined["reward"].to_list() == [None] and ws.joined_path(DAY).exists()
    assert join.coverage(joined)["coverage"] == 0.0


def test_join_latest_per_folded_name_ties_and_unknown_trajectories():
    """Latest by recorded_at, then received_ns; names that fold to one column (`judge.x`, `judge_x`)
    give the one recorded last; outcomes of other trajectories are ignored; row order is kept."""
    traj = pl.DataFrame({"trajectory_id": ["b", "a"], "agent": ["x", "y"]})
    rows = [("a", None, "reward", 0.0, None, 1, 5), ("a", None, "reward", 1.0, "good", 1, 6),  # tie: received last
            ("a", None, "judge.x", 0.25, None, 3, 1), ("a", None, "judge_x", 0.75, None, 2, 9),
            ("b", None, "agent", 2.0, None, 1, 1), ("zz", None, "reward", 9.0, "x", 1, 1),
            ("b", 2, "reward", 0.5, None, 1, 1), ("b", 2, "reward", 0.6, None, 2, 1)]
    outs = pl.DataFrame([{"outcome_id": f"o{i}", "trajectory_id": t, "step": s, "name": n, "value": v, "label": lab,
                          "source": "env", "recorded_at": T0 + timedelta(hours=h), "received_ns": r}
                         for i, (t, s, n, v, lab, h, r) in enumerate(rows)], schema=lake.OUTCOME_SCHEMA)
    joined = join.join_outcomes(traj, outs)
    assert joined["trajectory_id"].to_list() == ["b", "a"]
    assert joined["reward"].to_list() == [None, 1.0] and joined["reward_label"].to_list() == [None, "good"]
    assert joined["judge_x"].to_list() == [None, 0.25] and "judge_x_label" not in joined.columns
    assert joined["agent"].to_list() == ["x", "y"] and joined["agent_right"].to_list() == [2.0, None]
    assert joined["outcome_names"].to_list() == [["agent"], ["judge_x", "reward"]]
    assert joined["n_outcomes"].to_list() == [1, 2] and joined["success"].to_list() == [None, None]
    assert orjson.loads(joined["step_outcomes_json"][0]) == [{"step": 2, "name": "reward", "value": 0.6, "label": None}]
    assert joined["step_outcomes_json"][1] is None
