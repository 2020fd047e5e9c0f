"""Grading hooks add outcomes that flow through the ordinary join."""

from datetime import UTC, datetime

import polars as pl

from pipeline import lake
from pipeline.grading import grade_workspace
from pipeline.join import join_outcomes
from pipeline.workspace import Workspace

DAY = "2026-11-20"


def test_user_function_and_judge_outcomes_join_and_failures_are_reported(tmp_path):
    ws = Workspace.open("g", home=tmp_path)
    for i, answer in enumerate(["The answer is 4.", "no idea", "The answer is 5.", "boom"]):
        with ws.trajectory("a", trajectory_id=f"t{i}", started_at=datetime(2026, 11, 20, 10, i, tzinfo=UTC)) as r:
            r.user("2+2?")
            r.assistant(answer)
    lake.ingest_trajectories(ws, DAY)

    def judge(traj):  # stands in for an LLM judge: reads the conversation, returns (score, label)
        final = traj["messages"][-1]["content"]
        if final == "boom":
            raise RuntimeError("judge timed out")
        if "no idea" in final:
            return None  # abstain
        return (1.0, "correct") if "4" in final else (0.0, "wrong")

    report = grade_workspace(ws, judge, name="judge.correct", where=pl.col("agent") == "a")
    assert (report.graded, report.abstained) == (2, 1) and report.failed == {"t3": "RuntimeError: judge timed out"}
    outs, _ = lake.ingest_outcomes(ws)
    assert set(outs["source"]) == {"judge"}
    joined = join_outcomes(lake.read_days([ws.raw_path(DAY)]), outs).sort("trajectory_id")
    assert joined["judge_correct"].to_list() == [1.0, None, 0.0, None]
    assert joined["judge_correct_label"].to_list() == ["correct", None, "wrong", None]
