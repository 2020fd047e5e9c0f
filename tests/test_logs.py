"""Structured logs: JSON lines whose ids lead from an event to its data and to its Dagster run."""

import io
import logging

import dagster as dg
import httpx
import orjson
import pytest

from assets.definitions import build_assets
from assets.resources import local_resources
from pipeline import logs
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, TracemillConfig
from pipeline.demo.agents import populate
from pipeline.server.auth import create_token
from tests.capture_helpers import ThreadServer

DAY = "2026-11-16"


@pytest.fixture
def json_logs():
    buf = io.StringIO()
    handler = logs.configure("json", "DEBUG", stream=buf)
    yield lambda: [orjson.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    logging.getLogger(logs.ROOT).removeHandler(handler)
    logging.getLogger(logs.ROOT).setLevel(logging.NOTSET)


def test_events_carry_fields_and_context_ids(json_logs):
    log = logs.get_logger("test")
    with logs.log_context(workspace="ft-live", corpus_ref="org/sft@v3"):
        logs.event(log, "snapshot", rows=12, content_hash="ab12")
        with logs.log_context(trajectory_id="t-1"):
            logs.event(log, "quarantined", logging.WARNING, reason="messages.0.role: bad")
    logs.event(log, "outside")
    first, second, third = json_logs()
    assert first["event"] == "snapshot" and first["rows"] == 12 and first["corpus_ref"] == "org/sft@v3"
    assert first["level"] == "info" and first["logger"] == "tracemill.test" and first["ts"].endswith("+00:00")
    assert second["trajectory_id"] == "t-1" and second["workspace"] == "ft-live" and second["level"] == "warning"
    assert "workspace" not in third and "trajectory_id" not in third  # the context ended with its block
    assert first["msg"] == "snapshot workspace=ft-live corpus_ref=org/sft@v3 rows=12 content_hash=ab12"
    with pytest.raises(ValueError, match="TRACEMILL_LOG_FORMAT='xml'"):
        logs.configure("xml")


def test_dagster_runs_tag_events_with_run_id_partition_and_record_ids(json_logs, home, tiny_model_dir):
    ws = Workspace.open("demo", home=home)
    stats = populate(ws, days=[DAY], per_day=10, seed=2)
    assert stats.bad_records == 2
    cfg = TracemillConfig(workspace="demo", base_model=str(tiny_model_dir),
                          corpora=[CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft")])
    assets, checks = build_assets(cfg)
    from assets import observe

    observe.install()
    res = dg.materialize([*assets, *checks], selection=["raw_trajectories"], partition_key=DAY,
                         resources=local_resources("demo", home=str(home)))
    assert res.success
    events = json_logs()
    quarantined = [e for e in events if e["event"] == "quarantined"]
    assert len(quarantined) == 2
    for e in quarantined:
        assert e["dagster_run_id"] == res.run_id and e["partition"] == DAY and e["step"] == "raw_trajectories"
        assert e["workspace"] == "demo" and e["kind"] == "trajectory" and e["reason"] and e["source"]
    assert any(e.get("record_id") for e in quarantined)  # a bad record that still has its id names it
    ingested = next(e for e in events if e["event"] == "ingested")
    assert ingested["rows"] == 10 and ingested["quarantined"] == 2 and ingested["dagster_run_id"] == res.run_id


def test_capture_server_logs_refused_items_by_id(json_logs, home):
    Workspace.create("live", home)
    token = create_token(home, "live", "writer")
    server = ThreadServer(home).start()
    try:
        good = {"trajectory_id": "ok-1", "agent": "a", "messages": [{"role": "user", "content": "hi"}]}
        bad = {"trajectory_id": "bad-1", "agent": "a", "messages": [{"role": "robot", "content": "hi"}]}
        r = httpx.post(f"{server.url}/v1/workspaces/live/trajectories", json=[good, bad],
                       headers={"authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200 and r.json()["rejected"] == 1
    finally:
        server.stop()
    landed = next(e for e in json_logs() if e["event"] == "batch landed")
    assert landed["level"] == "warning" and landed["workspace"] == "live" and landed["accepted"] == 1
    assert landed["rejected_items"][0]["id"] == "bad-1" and "messages.0.role" in landed["rejected_items"][0]["error"]
