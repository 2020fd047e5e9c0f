"""Grading hooks add outcomes that flow through the ordinary join."""

from datetime import UTC, datetime

import polars as pl

from pipeline.capture.workspace import Workspace
from pipeline.lake import ingest as lake
from pipeline.lake.grading import grade_workspace
from pipeline.lake.join import join_outcomes

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


# ---- `tracemill grade`: graders the CLI imports by module path (this module is importable as tests.test_grading)
def exact_four(traj):
    """A user grader: 1.0 when the final answer mentions 4; raises on a trajectory it cannot handle."""
    final = traj["messages"][-1]["content"]
    if final == "boom":
        raise RuntimeError("judge timed out")
    return (1.0, "correct") if "4" in final else (0.0, "wrong")


def always_broken(traj):
    raise KeyError("no such field")


def _cli_workspace(home):
    ws = Workspace.open("g", home=home)
    for day, answers in (("2026-11-19", ["4", "3"]), (DAY, ["The answer is 4.", "boom", "5"])):
        for i, answer in enumerate(answers):
            with ws.trajectory("a", trajectory_id=f"{day}-{i}",
                               started_at=datetime.fromisoformat(f"{day}T10:0{i}:00+00:00")) as r:
                r.user("2+2?")
                r.assistant(answer)
        lake.ingest_trajectories(ws, day)
    with ws.trajectory("a", trajectory_id="late", started_at=datetime(2026, 11, 21, 9, tzinfo=UTC)) as r:
        r.user("2+2?")
        r.assistant("4")  # landed, not yet in the lake: skipped with a hint, never graded half-way
    ws.close()
    return ws


def test_grade_cli_lands_outcomes_and_reports_failures(home):
    import orjson
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    ws = _cli_workspace(home)
    out = CliRunner().invoke(app, ["grade", "g", "--fn", "tests.test_grading:exact_four", "--from", DAY,
                                   "--to", "2026-11-21", "--name", "judge.four", "--json"])
    assert out.exit_code == 0, out.output
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["days"] == [DAY] and summary["not_materialized"] == ["2026-11-21"]
    assert (summary["trajectories"], summary["graded"], summary["outcomes_added"]) == (3, 2, 2)
    assert summary["failures"] == {f"{DAY}-1": "RuntimeError: judge timed out"}
    assert summary["failures_by_reason"] == {"RuntimeError: judge timed out": 1}
    outs, _ = lake.ingest_outcomes(ws)
    assert lake.read_outcomes(ws).height == outs.height == 2
    assert sorted(zip(outs["trajectory_id"], outs["value"], outs["label"], outs["source"], strict=True)) == [
        (f"{DAY}-0", 1.0, "correct", "judge"), (f"{DAY}-2", 0.0, "wrong", "judge")]

    # human-readable run over one other day: progress, summary table, default name = the function's name
    out = CliRunner().invoke(app, ["grade", "g", "--fn", "tests.test_grading:exact_four", "--day", "2026-11-19",
                                   "--source", "test"])
    assert out.exit_code == 0, out.output
    assert "outcomes added" in out.output and "exact_four" in out.output
    outs, _ = lake.ingest_outcomes(ws)
    assert outs.filter(pl.col("name") == "exact_four")["value"].sort().to_list() == [0.0, 1.0]

    # a grader failing on every trajectory: reported per reason, exit 1, nothing lands
    out = CliRunner().invoke(app, ["grade", "g", "--fn", "tests.test_grading:always_broken"])
    assert out.exit_code == 1 and "KeyError" in out.output and "failures" in out.output
    assert lake.ingest_outcomes(ws)[0].height == 4


def test_grade_cli_errors_are_clear(home):
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    _cli_workspace(home)
    cases = [(["nope", "--fn", "tests.test_grading:exact_four"], "does not exist"),
             (["g", "--fn", "exact_four"], "module:function"),
             (["g", "--fn", "tests.no_such_module:f"], "cannot import"),
             (["g", "--fn", "tests.test_grading:missing"], "no attribute"),
             (["g", "--fn", "tests.test_grading:DAY"], "not a function"),
             (["g", "--fn", "tests.test_grading:exact_four", "--day", DAY, "--from", DAY], "either --day"),
             (["g", "--fn", "tests.test_grading:exact_four", "--from", DAY, "--to", "2026-11-01"], "before --from"),
             (["g", "--fn", "tests.test_grading:exact_four", "--day", "20-11-2026"], "not a day"),
             (["g", "--fn", "tests.test_grading:exact_four", "--name", "bad name"], "invalid --name"),
             (["g", "--fn", "tests.test_grading:exact_four", "--day", "2026-11-21"], "tracemill backfill")]
    for args, message in cases:
        out = CliRunner().invoke(app, ["grade", *args])
        assert out.exit_code == 1 and message in out.output, (args, out.output)
