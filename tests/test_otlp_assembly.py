"""Live OTLP capture over real HTTP: a trace sent in several export requests (as BatchSpanProcessor
does), a conversation of several traces, re-sent fragments, all assembled into one trajectory at ingest."""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import orjson
import polars as pl
import pytest

from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace
from pipeline.lake.ingest import ingest_trajectories, read_quarantine, workspace_counts
from pipeline.lake.stages import refresh_lake
from tests.capture_helpers import ThreadServer


def ns(day: str, seconds: float) -> str:
    t = datetime.fromisoformat(f"{day}T10:00:00+00:00").timestamp() + seconds
    return str(int(t * 1e9))


def attrs(d: dict) -> list[dict]:
    def value(v):
        if isinstance(v, int):
            return {"intValue": str(v)}
        return {"stringValue": v if isinstance(v, str) else json.dumps(v)}
    return [{"key": k, "value": value(v)} for k, v in d.items()]


def text(role: str, content: str) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


def call(cid: str, name: str, args: dict) -> dict:
    return {"role": "assistant", "parts": [{"type": "tool_call", "id": cid, "name": name, "arguments": args}]}


def result(cid: str, content: str) -> dict:
    return {"role": "tool", "parts": [{"type": "tool_call_response", "id": cid, "response": content}]}


def span(trace: str, sid: str, name: str, day: str, at: float, a: dict, parent: str = "", events=()) -> dict:
    return {"traceId": trace, "spanId": sid, "parentSpanId": parent, "name": name, "kind": 1,
            "startTimeUnixNano": ns(day, at), "endTimeUnixNano": ns(day, at + 0.5), "attributes": attrs(a),
            "status": {}, "events": list(events)}


def chat(trace: str, sid: str, day: str, at: float, inp: list, out: list, parent: str = "", **extra) -> dict:
    return span(trace, sid, "chat m", day, at, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                                 "gen_ai.input.messages": inp, "gen_ai.output.messages": out,
                                                 **extra}, parent)


def tool(trace: str, sid: str, day: str, at: float, cid: str, name: str, res: str, parent: str) -> dict:
    return span(trace, sid, f"execute_tool {name}", day, at, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.id": cid,
        "gen_ai.tool.call.result": res}, parent)


def export(*spans: dict) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": attrs({"service.name": "shop"})},
                               "scopeSpans": [{"scope": {"name": "tests"}, "spans": list(spans)}]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ThreadServer(tmp_path_factory.mktemp("otlp"), require_auth=False).start()
    yield srv
    srv.stop()


@pytest.fixture
def ws(server, request):
    workspace = Workspace.create(request.node.name.replace("_", "-")[:40].strip("-"), server.home)
    yield workspace
    workspace.close()


def send(server, ws: Workspace, body: dict) -> None:
    r = httpx.post(f"{server.url}/v1/traces", json=body, headers={"x-tracemill-workspace": ws.name}, timeout=10)
    assert r.status_code == 200 and r.json() == {}, r.text


def messages(df: pl.DataFrame, tid: str) -> list[dict]:
    row = df.filter(pl.col("trajectory_id") == tid)
    assert row.height == 1, df["trajectory_id"].to_list()
    return orjson.loads(row["messages_json"][0])


DAY = "2026-03-04"
T = "0af7651916cd43dd8448eb211c80319c"
Q = text("user", "Where is order 17?")
C1, C2 = call("c1", "lookup_order", {"id": 17}), call("c2", "submit", {"answer": "shipped"})


def agent_run() -> list[dict]:
    """An agent run as BatchSpanProcessor exports it: spans as they end, the root (agent) span last."""
    judged = {"name": "gen_ai.evaluation.result", "timeUnixNano": ns(DAY, 3.6),
              "attributes": attrs({"gen_ai.evaluation.name": "helpful", "gen_ai.evaluation.score.value": 1})}
    first = export(chat(T, "01" * 8, DAY, 1, [Q], [C1], "aa" * 8, **{"gen_ai.usage.input_tokens": 11}),
                   tool(T, "02" * 8, DAY, 2, "c1", "lookup_order", "shipped", "aa" * 8))
    second = export(chat(T, "03" * 8, DAY, 3, [Q, C1, result("c1", "shipped")], [C2], "aa" * 8))
    second["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["events"] = [judged]
    last = export(tool(T, "04" * 8, DAY, 4, "c2", "submit", "ok", "aa" * 8),
                  span(T, "aa" * 8, "invoke_agent order-bot", DAY, 0, {
                      "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "order-bot"}))
    return [first, second, last]


def test_a_trace_sent_in_three_requests_is_one_trajectory(server, ws):
    for body in agent_run():
        send(server, ws, body)
    assert ws.days() == [DAY]  # only fragments landed for the day: still a day to ingest
    counts = workspace_counts(ws)  # `workspace show`, before any ingest
    assert counts["otlp_traces"] == 1 and counts["outcomes"] == 1
    df, stats = ingest_trajectories(ws, DAY)
    assert df.height == 1 and stats.quarantined == 0
    msgs = messages(df, f"otlp-{T}")
    assert msgs[0]["content"] == "Where is order 17?"  # the first request's spans: lost before assembly
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant", "tool"]
    assert [c["name"] for m in msgs for c in m.get("tool_calls", [])] == ["lookup_order", "submit"]
    assert msgs[2]["content"] == "shipped" and msgs[4]["content"] == "ok"  # the last request's tool span
    assert msgs[1]["meta"]["input_tokens"] == 11
    row = df.row(0, named=True)
    assert row["agent"] == "order-bot" and row["started_at"] == datetime.fromisoformat(f"{DAY}T10:00:00+00:00")
    assert len(json.loads(row["metadata_json"])["original"]["spans"]) == 5
    outcomes = [line.record for line in read_landed(ws.landing, "outcome")]
    assert [(o["trajectory_id"], o["name"], o["value"]) for o in outcomes] == [(f"otlp-{T}", "helpful", 1.0)]


def test_re_sent_fragments_do_not_duplicate_and_the_latest_copy_wins(server, ws):
    first, second, last = agent_run()
    for body in (first, second, last, first, second):  # an exporter retry re-sends whole requests
        send(server, ws, body)
    df, _ = ingest_trajectories(ws, DAY)
    msgs = messages(df, f"otlp-{T}")
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant", "tool"]
    ids = [line.record["outcome_id"] for line in read_landed(ws.landing, "outcome")]
    assert len(ids) == 2 and len(set(ids)) == 1  # the re-mapped evaluation has the same outcome id
    retry = json.loads(json.dumps(last).replace('"ok"', '"ok, resubmitted"'))
    send(server, ws, retry)
    df, _ = ingest_trajectories(ws, DAY)
    assert messages(df, f"otlp-{T}")[4]["content"] == "ok, resubmitted"


def test_a_conversation_of_two_traces_is_one_trajectory(server, ws):
    hi, which = text("user", "I need a refund"), text("assistant", "Which order?")
    conv = {"gen_ai.conversation.id": "conv-42"}
    turn1 = export(chat("11" * 16, "01" * 8, DAY, 1, [hi], [which], **conv, **{"gen_ai.usage.input_tokens": 5}))
    turn2 = export(chat("22" * 16, "02" * 8, DAY, 60, [hi, which, text("user", "Order 17")],
                        [text("assistant", "Refunded.")], **conv))
    send(server, ws, turn1)
    send(server, ws, turn2)
    df, _ = ingest_trajectories(ws, DAY)
    assert df["trajectory_id"].to_list() == ["otlp-conversation-conv-42"]
    msgs = messages(df, "otlp-conversation-conv-42")
    assert [m["content"] for m in msgs] == ["I need a refund", "Which order?", "Order 17", "Refunded."]
    assert msgs[1]["meta"]["input_tokens"] == 5  # turn 1's own span, not just its echo in turn 2's input
    row = df.row(0, named=True)
    assert row["session_id"] == "conv-42" and json.loads(row["metadata_json"])["trace_ids"] == ["11" * 16, "22" * 16]


def test_batch_endpoint_and_otlp_with_the_same_id_latest_received_wins(server, ws):
    first, second, last = agent_run()
    send(server, ws, first)
    other = {"trajectory_id": f"otlp-{T}", "agent": "manual", "started_at": f"{DAY}T10:00:00Z",
             "messages": [{"role": "user", "content": "sent by hand"}]}
    r = httpx.post(f"{server.url}/v1/workspaces/{ws.name}/trajectories", json=[other], timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] == 1
    df, stats = ingest_trajectories(ws, DAY)
    assert messages(df, f"otlp-{T}")[0]["content"] == "sent by hand" and stats.duplicates == 1
    send(server, ws, second)
    df, _ = ingest_trajectories(ws, DAY)
    assert messages(df, f"otlp-{T}")[0]["content"] == "Where is order 17?"


def test_an_unmappable_trace_is_quarantined_and_the_day_still_ingests(server, ws):
    send(server, ws, agent_run()[0])
    broken = export(chat("33" * 16, "05" * 8, DAY, 5, [Q], [C1]))
    broken["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][2]["value"] = {"stringValue": "[{not json"}
    ws.writer.append("otlp_span", DAY, [{"trace_id": "33" * 16, **broken}])  # e.g. landed by an older version
    ws.writer.append("otlp_span", DAY, [{"trace_id": "55" * 16, "resourceSpans": "not a list"}])
    ws.writer.append_records("otlp_span", DAY, [b'{"torn'])
    df, stats = ingest_trajectories(ws, DAY)
    assert df["trajectory_id"].to_list() == [f"otlp-{T}"] and stats.quarantined == 3
    bad = sorted(read_quarantine(ws), key=lambda b: b["reason"])
    assert bad[0]["reason"].startswith("malformed JSON")
    assert bad[1]["reason"] == "unmappable OTLP spans: not an OTLP span fragment (no spans)"
    assert bad[2]["reason"].startswith("unmappable OTLP spans:") and "gen_ai.input.messages" in bad[2]["reason"]
    assert bad[2]["record"]["trace_id"] == "33" * 16


def test_days_with_only_fragments_reach_the_cli_refresh_and_midnight_splits_a_trace(server, ws):
    late = "2026-03-05"
    before = export(chat("44" * 16, "01" * 8, DAY, 14 * 3600 - 1, [Q], [text("assistant", "Looking.")]))
    after = export(chat("44" * 16, "02" * 8, late, -10 * 3600 + 1, [Q, text("assistant", "Looking."),
                                                                    text("user", "Thanks")],
                        [text("assistant", "Shipped.")]))
    send(server, ws, before)  # 23:59:59 UTC
    send(server, ws, after)  # 00:00:01 UTC, the next request
    assert ws.days() == [DAY, late]  # the documented limit: a trace straddling midnight is assembled per day
    assert refresh_lake(ws)["trajectories"] == 2  # the CLI path ingests days that hold only fragments
    assert [m["content"] for m in messages(ingest_trajectories(ws, late)[0], f"otlp-{'44' * 16}")][-1] == "Shipped."


def test_a_judge_on_its_own_span_scores_the_trajectory_its_trace_becomes(server, ws):
    """An LLM judge that runs after the agent reports on a span of its own, in a later request: the
    outcome lands at capture and joins the trajectory assembled from the earlier requests."""
    for body in agent_run()[::2]:  # the run without the span that carried the `helpful` verdict
        send(server, ws, body)
    verdict = {"name": "gen_ai.evaluation.result", "timeUnixNano": ns(DAY, 9),
               "attributes": attrs({"gen_ai.evaluation.name": "correct", "gen_ai.evaluation.score.value": 0,
                                    "gen_ai.evaluation.score.label": "wrong"})}
    send(server, ws, export(span(T, "0e" * 8, "evaluate", DAY, 8, {"gen_ai.operation.name": "evaluate"},
                                 "aa" * 8, events=[verdict])))
    outcomes = [line.record for line in read_landed(ws.landing, "outcome")]
    assert [(o["trajectory_id"], o["name"], o["value"], o["label"]) for o in outcomes] == \
        [(f"otlp-{T}", "correct", 0.0, "wrong")]
    df, _ = ingest_trajectories(ws, DAY)
    assert df["trajectory_id"].to_list() == [f"otlp-{T}"]  # the outcome's trajectory exists
