"""Issue 16, item 3: reading captured trajectories and their outcomes from a terminal, and adding an
outcome, with the real `tracemill` entry point on a populated workspace."""

import json

import pytest

from pipeline.capture.workspace import Workspace
from pipeline.demo.agents import populate
from tests.test_cli import tm

DAYS = ["2026-11-16", "2026-11-17"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    stats = populate(Workspace.open("demo", home=home), days=DAYS, per_day=6, seed=3, late_fraction=0.0)
    return home, stats


def test_list_filters_by_outcome_and_day(world):
    home, stats = world
    everything = json.loads(tm("trajectories", "list", "demo", "--json", home=home).stdout)
    assert everything["total"] == len(stats.rewards) == 12
    rewarded = {t for t, r in stats.rewards.items() if r > 0}
    good = json.loads(tm("trajectories", "list", "demo", "--filter", "reward > 0", "--json", home=home).stdout)
    assert {t["trajectory_id"] for t in good["trajectories"]} == rewarded
    assert all(t["reward"] > 0 for t in good["trajectories"])
    day = json.loads(tm("trajectories", "list", "demo", "--day", DAYS[1], "--json", home=home).stdout)
    assert day["total"] == 6 and {t["day"] for t in day["trajectories"]} == {DAYS[1]}
    table = tm("trajectories", "list", "demo", "--limit", "3", home=home)
    assert table.returncode == 0 and "3 of 12 trajectories" in table.stdout and "reward" in table.stdout
    bad = tm("trajectories", "list", "demo", "--filter", "reward >", home=home)
    assert bad.returncode == 1 and bad.stderr.startswith("error: --filter")


def test_show_renders_messages_tool_calls_and_outcomes(world):
    home, stats = world
    tid = next(t for t, r in stats.rewards.items() if r > 0)
    data = json.loads(tm("trajectories", "show", "demo", tid, "--json", home=home).stdout)
    calls = [c["name"] for m in data["messages"] for c in m.get("tool_calls") or []]
    assert data["trajectory_id"] == tid and calls and any(o["name"] == "reward" for o in data["outcomes"])
    shown = tm("trajectories", "show", "demo", tid, home=home)
    assert shown.returncode == 0 and tid in shown.stdout and f"→ {calls[0]}(" in shown.stdout
    assert "assistant" in shown.stdout and "outcomes" in shown.stdout
    missing = tm("trajectories", "show", "demo", "nope", home=home)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "trajectories list demo" in missing.stderr


def test_outcome_record_is_joined_into_list_and_show(world):
    home, stats = world
    tid = sorted(stats.rewards)[0]
    rec = tm("outcome", "record", "demo", tid, "helpful", "0.75", home=home)
    assert rec.returncode == 0 and "recorded helpful = 0.75" in rec.stdout
    assert tm("outcome", "record", "demo", tid, "verdict", "sloppy", home=home).returncode == 0
    listed = json.loads(tm("trajectories", "list", "demo", "--filter", "helpful > 0.5", "--json", home=home).stdout)
    assert [t["trajectory_id"] for t in listed["trajectories"]] == [tid]
    outs = {o["name"]: o for o in json.loads(tm("trajectories", "show", "demo", tid, "--json", home=home).stdout)["outcomes"]}
    assert outs["helpful"]["value"] == 0.75 and outs["helpful"]["source"] == "human"
    assert outs["verdict"]["label"] == "sloppy" and outs["verdict"]["value"] is None
    bad = tm("outcome", "record", "demo", tid, "no spaces", "1", home=home)
    assert bad.returncode == 1 and bad.stderr.startswith("error: outcome name") and bad.stderr.count("\n") == 1


def test_publish_makes_one_trace_per_trajectory_with_steps_and_outcomes(world):
    from mlflow import MlflowClient

    home, stats = world
    rewarded = {t for t, r in stats.rewards.items() if r > 0}
    out = tm("trajectories", "publish", "demo", "--filter", "reward > 0", "--limit", "2", "--json", home=home)
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    assert (done["published"], done["skipped"], done["matched"], done["experiment"]) == (2, 0, len(rewarded), "demo")
    assert done["url"].endswith(f"/#/experiments/{done['experiment_id']}/traces")

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    traces = [client.get_trace(t.info.trace_id) for t in client.search_traces(locations=[done["experiment_id"]])]
    assert sorted(t.info.trace_id for t in traces) == sorted(done["trace_ids"])
    for trace in traces:
        tid = trace.info.tags["tracemill.trajectory_id"]
        assert tid in rewarded and trace.info.tags["workspace"] == "demo" and trace.info.tags["agent"]
        shown = json.loads(tm("trajectories", "show", "demo", tid, "--json", "--no-refresh", home=home).stdout)
        calls = [c["name"] for m in shown["messages"] for c in m.get("tool_calls") or []]
        spans = trace.data.spans
        assert [s.name for s in spans if s.span_type == "TOOL"] == calls
        assert sum(s.span_type == "CHAT_MODEL" for s in spans) == sum(m["role"] == "assistant" for m in shown["messages"])
        rewards = [a.value for a in trace.info.assessments if a.name == "reward"]
        assert rewards == [stats.rewards[tid]]

    again = tm("trajectories", "publish", "demo", "--filter", "reward > 0", "--limit", "3", home=home)
    assert again.returncode == 0 and "published 1 of" in again.stdout and "(2 already there)" in again.stdout
    assert "/#/experiments/" in again.stdout and "mlflow ui --backend-store-uri" in again.stdout
    other = json.loads(tm("trajectories", "publish", "demo", "--limit", "1", "--experiment", "review", "--json",
                          home=home).stdout)
    assert other["experiment"] == "review" and other["published"] == 1 and other["experiment_id"] != done["experiment_id"]
