"""The capture server over real HTTP on 127.0.0.1: per-item results, auth, limits, fuzzing, remote SDK."""

from __future__ import annotations

import gzip
import json
import time
import uuid

import httpx
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.capture.remote_sdk import RemoteWorkspace
from pipeline.capture.workspace import Workspace
from pipeline.lake.ingest import ingest_outcomes, ingest_trajectories, read_quarantine
from pipeline.server.auth import create_token, revoke
from tests.capture_helpers import ThreadServer

MAX_BODY = 256 * 1024


def traj(tid: str, **extra) -> dict:
    return {"trajectory_id": tid, "agent": {"name": "planner"}, "started_at": "2026-11-20T09:00:00Z",
            "messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "tool_calls": [{"id": "c1", "name": "calc", "arguments": {"x": 1}}]},
                         {"role": "tool", "content": "1", "tool_call_id": "c1", "name": "calc"},
                         {"role": "assistant", "content": "1"}], **extra}


class Live:
    def __init__(self, home):
        self.home = home
        for name in ("alpha", "beta"):
            Workspace.create(name, home)
        self.admin = create_token(home, "*", "admin")
        self.alpha_w = create_token(home, "alpha", "writer")
        self.alpha_r = create_token(home, "alpha", "reader")
        self.beta_w = create_token(home, "beta", "writer")
        self.server = ThreadServer(home, max_body_bytes=MAX_BODY).start()
        self.url = self.server.url

    def client(self, token: str | None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def rows(self, ws: str = "alpha", day: str = "2026-11-20") -> pl.DataFrame:
        df, _ = ingest_trajectories(Workspace(ws, self.home), day)
        return df


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    lv = Live(tmp_path_factory.mktemp("capture"))
    yield lv
    lv.server.stop()


def test_batch_of_100_with_3_bad_items_lands_97_and_names_the_3(live):
    items = [traj(f"batch-{i}") for i in range(100)]
    items[7]["messages"][0]["role"] = "robot"
    del items[42]["trajectory_id"]
    items[99]["started_at"] = "not a time"
    with live.client(live.alpha_w) as c:
        r = c.post("/v1/workspaces/alpha/trajectories", content=orjson.dumps(items))
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 97 and body["rejected"] == 3
    errors = {e["index"]: e for e in body["errors"]}
    assert set(errors) == {7, 42, 99}
    assert errors[7]["id"] == "batch-7" and errors[7]["error"].startswith("messages.0.role:")
    assert errors[42]["id"] is None and errors[42]["error"].startswith("trajectory_id: Field required")
    assert errors[99]["id"] == "batch-99" and errors[99]["error"].startswith("started_at:")
    ids = set(live.rows()["trajectory_id"])
    assert {f"batch-{i}" for i in range(100) if i not in (7, 42, 99)} <= ids and "batch-7" not in ids


def test_resending_the_same_id_gives_one_row_last_one_wins(live):
    with live.client(live.alpha_w) as c:
        for answer in ("first", "second", "third"):
            t = traj("resend-1")
            t["messages"][-1]["content"] = answer
            assert c.post("/v1/workspaces/alpha/trajectories", json=[t]).json()["accepted"] == 1
    rows = live.rows().filter(pl.col("trajectory_id") == "resend-1")
    assert rows.height == 1 and rows["final_answer"][0] == "third"


def test_tokens_isolate_workspaces_and_roles(live):
    body = orjson.dumps([traj("iso-1")])
    with live.client(None) as c:
        r = c.post("/v1/workspaces/alpha/trajectories", content=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    for bad in ("tm_nope_nope", "garbage", live.alpha_w + "x"):
        with live.client(bad) as c:
            assert c.post("/v1/workspaces/alpha/trajectories", content=body).status_code == 401
    with live.client(live.beta_w) as c:
        r = c.post("/v1/workspaces/alpha/trajectories", content=body)
        assert r.status_code == 403 and "alpha" in r.json()["detail"]
        assert c.get("/v1/workspaces/alpha").status_code == 403
        assert c.post("/v1/workspaces/beta/trajectories", content=body).json()["accepted"] == 1
        assert c.get("/v1/workspaces").status_code == 403  # admin only
    with live.client(live.alpha_r) as c:
        assert c.post("/v1/workspaces/alpha/trajectories", content=body).status_code == 403
        r = c.get("/v1/workspaces/alpha")
        assert r.status_code == 200 and r.json()["counts"]["trajectories"] >= 1
    temp = create_token(live.home, "alpha", "writer")
    with live.client(temp) as c:
        assert c.post("/v1/workspaces/alpha/trajectories", content=body).status_code == 200
        assert revoke(live.home, temp)
        assert c.post("/v1/workspaces/alpha/trajectories", content=body).status_code == 401


def test_admin_creates_lists_and_deletes_workspaces(live):
    with live.client(live.admin) as admin:
        assert admin.post("/v1/workspaces", json={"name": "gamma", "description": "g"}).status_code == 201
        assert admin.post("/v1/workspaces", json={"name": "gamma"}).status_code == 409
        assert admin.post("/v1/workspaces", json={"name": "Not Valid"}).status_code == 400
        assert "gamma" in admin.get("/v1/workspaces").json()["workspaces"]
        token = create_token(live.home, "gamma", "writer")
        with live.client(token) as w:
            assert w.post("/v1/workspaces/gamma/trajectories", json=[traj("g-1")]).json()["accepted"] == 1
            r = admin.delete("/v1/workspaces/gamma")
            assert r.status_code == 200 and r.json()["revoked_tokens"] == 1
            assert w.post("/v1/workspaces/gamma/trajectories", json=[traj("g-2")]).status_code == 401
        assert admin.get("/v1/workspaces/gamma").status_code == 404
        assert admin.post("/v1/workspaces/nowhere/trajectories", json=[traj("x")]).status_code == 404
    with live.client(live.alpha_w) as c:
        assert c.post("/v1/workspaces", json={"name": "delta"}).status_code == 403


def test_bodies_over_the_limit_get_413_and_the_server_stays_up(live):
    big = orjson.dumps([traj(f"big-{i}", metadata={"pad": "x" * 2000}) for i in range(200)])
    assert len(big) > MAX_BODY
    with live.client(live.alpha_w) as c:
        assert c.post("/v1/workspaces/alpha/trajectories", content=big).status_code == 413

        def chunks():  # no Content-Length: the streamed size is what trips the limit
            for i in range(0, len(big), 16384):
                yield big[i:i + 16384]

        r = c.post("/v1/workspaces/alpha/trajectories", content=chunks())
        assert r.status_code == 413
        bomb = gzip.compress(b"[" + b" " * (4 * MAX_BODY) + b"]")
        r = c.post("/v1/workspaces/alpha/trajectories", content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413
        ok = gzip.compress(orjson.dumps([traj("gz-1")]))
        r = c.post("/v1/workspaces/alpha/trajectories", content=ok, headers={"content-encoding": "gzip"})
        assert r.json()["accepted"] == 1
        assert c.get("/healthz").status_code == 200


# An unpaired surrogate or too deep nesting inside one item is refused per item since issue 12 (item 7):
# see tests/test_real_use_capture_validation.py.
@pytest.mark.parametrize("body", [b"[{", b"{'single': 'quotes'}", b"nope", b"[1,]", b"\xff\xfe", b"", b"   ",
                                  b'{"a":' * 3000 + b"1" + b"}" * 3000])
def test_malformed_json_is_a_clear_400_and_the_server_stays_up(live, body):
    with live.client(live.alpha_w) as c:
        for path in ("trajectories", "outcomes", "preferences"):
            r = c.post(f"/v1/workspaces/alpha/{path}", content=body)
            assert r.status_code == 400, (path, body, r.text)
            assert "JSON" in r.json()["detail"] or "empty body" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200


def test_wrong_types_are_per_item_errors(live):
    with live.client(live.alpha_w) as c:
        r = c.post("/v1/workspaces/alpha/trajectories", json=[1, "x", None, [], traj("types-ok")])
        body = r.json()
        assert r.status_code == 200 and body["accepted"] == 1
        assert [e["index"] for e in body["errors"]] == [0, 1, 2, 3]
        assert c.post("/v1/workspaces/alpha/trajectories", json="a string").status_code == 400


def test_unknown_fields_are_kept(live):
    t = traj("unknown-1", experiment="exp-42", client={"sdk": "go", "v": 3})
    with live.client(live.alpha_w) as c:
        assert c.post("/v1/workspaces/alpha/trajectories", json={"trajectories": [t]}).json()["accepted"] == 1
    row = live.rows().filter(pl.col("trajectory_id") == "unknown-1")
    meta = orjson.loads(row["metadata_json"][0])
    assert meta["extra"] == {"experiment": "exp-42", "client": {"sdk": "go", "v": 3}}


def test_outcomes_and_preferences_are_validated_per_item(live):
    with live.client(live.alpha_w) as c:
        r = c.post("/v1/workspaces/alpha/outcomes", json=[
            {"trajectory_id": "batch-1", "name": "reward", "value": 1.0},
            {"trajectory_id": "batch-1", "name": "bad name!", "value": 1.0},
            {"trajectory_id": "batch-2", "name": "success", "value": True, "grader": "unit"}])
        assert r.json()["accepted"] == 2 and r.json()["errors"][0]["index"] == 1
        r = c.post("/v1/workspaces/alpha/preferences", json={"preferences": [
            {"chosen": "batch-1", "rejected": "batch-2"}, {"chosen": "a", "rejected": "a"}]})
        assert r.json()["accepted"] == 1 and "different" in r.json()["errors"][0]["error"]
    df, stats = ingest_outcomes(Workspace("alpha", live.home))
    assert {"reward", "success"} <= set(df["name"]) and stats.quarantined == 0


def test_streamed_messages_fold_into_one_trajectory_on_close(live):
    base = "/v1/workspaces/alpha/trajectories/stream-1"
    with live.client(live.alpha_w) as c:
        assert c.post(f"{base}/close").status_code == 404
        r = c.post(f"{base}/messages", json={"trajectory": {"agent": "streamer", "started_at": "2026-11-20T10:00:00Z"},
                                             "messages": [{"role": "user", "content": "q"}], "offset": 0})
        assert r.json()["appended"] == 1
        again = {"messages": [{"role": "assistant", "content": "a1"}], "offset": 1}
        assert c.post(f"{base}/messages", json=again).status_code == 200
        assert c.post(f"{base}/messages", json=again).status_code == 200  # a retry: same slot, no duplicate
        r = c.post(f"{base}/messages", json=[{"role": "robot"}])
        assert r.status_code == 422 and r.json()["errors"][0]["error"].startswith("role:")
        r = c.post(f"{base}/close", json={"metadata": {"k": 1}})
        assert r.status_code == 200 and r.json()["day"] == "2026-11-20"
        assert c.post(f"{base}/close").json()["already_closed"] is True
        assert c.post(f"{base}/messages", json=[{"role": "user", "content": "late"}]).status_code == 409
        c.post("/v1/workspaces/alpha/trajectories/stream-2/messages", json=[{"role": "user", "content": "x"}])
        r = c.post("/v1/workspaces/alpha/trajectories/stream-2/close")
        assert r.status_code == 422 and "agent" in r.json()["detail"]
    row = live.rows().filter(pl.col("trajectory_id") == "stream-1")
    msgs = orjson.loads(row["messages_json"][0])
    assert [m["content"] for m in msgs] == ["q", "a1"] and row["agent"][0] == "streamer"


def _otlp_request() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    msgs = orjson.dumps([{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]).decode()
    span = Span(trace_id=bytes.fromhex("ab" * 16), span_id=bytes.fromhex("cd" * 8), name="chat", kind=3,
                start_time_unix_nano=1_763_629_200_000_000_000, end_time_unix_nano=1_763_629_201_000_000_000,
                attributes=[KeyValue(key="gen_ai.input.messages", value=AnyValue(string_value=msgs))])
    res = ResourceSpans(resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value="svc"))]},
                        scope_spans=[ScopeSpans(spans=[span])])
    return ExportTraceServiceRequest(resource_spans=[res]).SerializeToString()


def test_otlp_traces_land_as_trajectories(live):
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    proto = _otlp_request()
    with live.client(live.alpha_w) as c:
        r = c.post("/v1/traces", content=proto, headers={"content-type": "application/x-protobuf"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
        as_json = MessageToDict(ExportTraceServiceRequest.FromString(proto))  # ids base64 here: make them hex
        span = as_json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        span["traceId"], span["spanId"] = "ef" * 16, "01" * 8
        assert c.post("/v1/traces", json=as_json).status_code == 200
        assert c.post("/v1/traces", content=b"\x00garbage", headers={"content-type": "application/x-protobuf"}).status_code == 400
        assert c.post("/v1/traces", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    with live.client(live.admin) as c:
        assert c.post("/v1/traces", json=as_json).status_code == 400  # admin: say which workspace
        r = c.post("/v1/traces", json=as_json, headers={"x-tracemill-workspace": "beta"})
        assert r.status_code == 200
    rows = live.rows("alpha", "2025-11-20")  # the spans' start day; one trajectory per trace
    assert rows.height == 2 and set(rows["agent"]) == {"svc"}
    assert live.rows("beta", "2025-11-20").height == 1


# ---- fuzzing the live server ------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
FIELDS = ["trajectory_id", "agent", "started_at", "ended_at", "messages", "metadata", "tools", "workspace", "model"]


@st.composite
def mutated_trajectory(draw) -> dict:
    t = traj(draw(st.text(min_size=0, max_size=8)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "message", "call"]))
        if where == "top":
            t[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif where == "message" and isinstance(t.get("messages"), list) and t["messages"]:
            m = t["messages"][draw(st.integers(0, len(t["messages"]) - 1))]
            if isinstance(m, dict):
                m[draw(st.sampled_from(["role", "content", "tool_calls", "meta", "is_error", "name", "x"]))] = draw(json_values)
        elif isinstance(t.get("messages"), list) and len(t["messages"]) > 1 and isinstance(t["messages"][1], dict):
            t["messages"][1]["tool_calls"] = [{"id": draw(json_values), "name": "calc", "arguments": draw(json_values)}]
    return t


def dumps(value) -> bytes:  # the stdlib, unlike orjson, writes integers beyond 64 bits: clients may too
    return json.dumps(value).encode()


payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(dumps),
    st.lists(mutated_trajectory(), max_size=5).map(dumps),
    mutated_trajectory().map(dumps),
    st.lists(json_values, max_size=5).map(lambda v: dumps({"trajectories": v})),
    st.lists(json_values, max_size=5).map(lambda v: dumps({"messages": v, "offset": 0})),
    st.integers(1, 4000).map(lambda n: b"[" * n + b"]" * n),
)
PATHS = ["trajectories", "outcomes", "preferences", "trajectories/fz/messages", "trajectories/fz/close", "@traces"]


@settings(max_examples=1200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=payloads, path=st.sampled_from(PATHS), ctype=st.sampled_from(["application/json", "application/x-protobuf"]))
def test_fuzzed_payloads_never_cause_a_500(live, body, path, ctype):
    url = "/v1/traces" if path == "@traces" else f"/v1/workspaces/alpha/{path}"
    r = _fuzz_client(live).post(url, content=body, headers={"content-type": ctype})
    assert r.status_code < 500, (url, body[:300], r.text[:300])


_clients: dict[str, httpx.Client] = {}


def _fuzz_client(live) -> httpx.Client:
    if live.url not in _clients:
        _clients[live.url] = live.client(live.alpha_w)
    return _clients[live.url]


def test_server_is_up_after_fuzzing_and_landing_reads_clean(live):
    with live.client(live.alpha_w) as c:
        assert c.get("/healthz").json()["failures"] == 0
        assert c.get("/v1/workspaces/alpha").status_code == 200
    ws = Workspace("alpha", live.home)
    for day in ws.days():
        ingest_trajectories(ws, day)
    assert read_quarantine(ws) == []  # nothing acknowledged by the server is rejected by the lake


# ---- the remote SDK end to end ----------------------------------------------------------------------
def test_remote_sdk_records_flushes_and_closes(live):
    ws = RemoteWorkspace(live.url, "alpha", live.alpha_w, batch_size=50, flush_interval=0.05)
    with ws.trajectory("sdk-agent", trajectory_id="sdk-run-1", started_at=None, task_id="t1") as run:
        run.user("how much?")
        call = run.tool_call("lookup_price", {"item": "apple"})
        run.tool_result(call, {"price": 1.25})
        run.assistant("1.25")
        run.outcome("reward", 1.0)
    ws.write_trajectories([traj(f"sdk-{i}") for i in range(120)])
    ws.record_outcome("sdk-1", "success", True)
    ws.record_preference("sdk-1", "sdk-2")
    with pytest.raises(ValueError, match="messages.0.role"):
        ws.write_trajectories([{**traj("sdk-bad"), "messages": [{"role": "robot"}]}])
    assert ws.flush(10) and ws.close(10)
    assert ws.rejected == [] and ws.acknowledged == 124
    assert {f"sdk-{i}" for i in range(120)} <= set(live.rows()["trajectory_id"])
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert "sdk-run-1" in set(live.rows(day=today)["trajectory_id"])


def test_remote_sdk_streams_an_open_trajectory(live, monkeypatch):
    from pipeline.capture.remote_sdk import connect

    monkeypatch.setenv("TRACEMILL_TOKEN", live.alpha_w)
    with connect(live.url, "alpha") as ws:
        ws.append_messages("sdk-stream", [{"role": "user", "content": "q"}], offset=0,
                           header={"agent": "s", "started_at": "2026-11-20T11:00:00Z"})
        ws.append_messages("sdk-stream", [{"role": "assistant", "content": "a"}], offset=1)
        assert ws.close_trajectory("sdk-stream", model="m")["day"] == "2026-11-20"
        with pytest.raises(httpx.HTTPStatusError):
            ws.append_messages("sdk-stream", [{"role": "user", "content": "late"}])
    row = live.rows().filter(pl.col("trajectory_id") == "sdk-stream")
    assert row["model"][0] == "m" and row["n_messages"][0] == 2


def test_remote_sdk_surfaces_rejections(live):
    seen = []
    ws = RemoteWorkspace(live.url, "alpha", live.alpha_r, on_rejected=seen.append, flush_interval=0.01)
    ws.write_trajectories([traj("reader-1"), traj("reader-2")])
    assert ws.close(10)
    assert [r.id for r in seen] == ["reader-1", "reader-2"] and "HTTP 403" in seen[0].error
    assert ws.rejected == seen and ws.acknowledged == 0


def test_remote_sdk_close_gives_up_at_its_timeout_and_says_what_was_lost():
    from tests.capture_helpers import free_port

    ws = RemoteWorkspace(f"http://127.0.0.1:{free_port()}", "alpha", "tm_x_y", batch_size=2, max_backoff=0.05)
    ws.write_trajectories([traj(f"lost-{i}") for i in range(5)])
    t0 = time.monotonic()
    assert ws.close(timeout=0.5) is False
    assert time.monotonic() - t0 < 5
    assert ws.abandoned == 5 and sorted(r.id for r in ws.rejected) == [f"lost-{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        ws.write_trajectories([traj("after-close")])


def test_remote_sdk_bounded_queue_drops_or_raises_when_full():
    from pipeline.capture.remote_sdk import QueueFull
    from tests.capture_helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    ws = RemoteWorkspace(dead, "alpha", None, batch_size=1, max_queue=3, put_timeout=0.01)
    for i in range(10):
        ws.write_trajectories([traj(f"full-{i}")])  # never blocks the agent for more than put_timeout
    assert ws.dropped >= 6 and all("queue full" in r.error for r in ws.rejected)
    ws.close(timeout=0.1)
    strict = RemoteWorkspace(dead, "alpha", None, batch_size=1, max_queue=3, put_timeout=0.01, on_full="raise")
    with pytest.raises(QueueFull):
        for i in range(10):
            strict.write_trajectories([traj(f"full-{i}")])
    strict.close(timeout=0.1)


def test_remote_sdk_survives_a_server_restart(tmp_path):
    Workspace.create("w", tmp_path)
    token = create_token(tmp_path, "w", "writer")
    server = ThreadServer(tmp_path).start()
    ws = RemoteWorkspace(server.url, "w", token, batch_size=20, flush_interval=0.02, max_backoff=0.3)
    run = uuid.uuid4().hex[:6]
    ids = [f"{run}-{i}" for i in range(300)]
    for i, tid in enumerate(ids):
        ws.write_trajectories([traj(tid)])
        if i == 100:
            assert ws.flush(10)
            server.stop()  # requests now fail to connect: the SDK keeps them and retries
        if i == 200:
            time.sleep(0.3)
            server.start()
    assert ws.flush(20) and ws.close(5)
    server.stop()
    assert ws.retries > 0 and ws.rejected == [] and ws.acknowledged == 300
    df, _ = ingest_trajectories(Workspace("w", tmp_path), "2026-11-20")
    assert sorted(df["trajectory_id"]) == sorted(ids)


def test_old_close_tombstones_are_pruned_at_startup(tmp_path):
    import os
    import time

    ws = Workspace.create("gamma", tmp_path)
    ws.open_dir.mkdir(parents=True)
    old, fresh, still_open = ws.open_dir / "a.closed", ws.open_dir / "b.closed", ws.open_dir / "c.ndjson"
    for p in (old, fresh, still_open):
        p.write_bytes(b"{}\n")
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    os.utime(still_open, (week_ago, week_ago))  # an open trajectory is never pruned, however old
    server = ThreadServer(tmp_path).start()
    server.stop()
    assert not old.exists() and fresh.exists() and still_open.exists()
