"""Issue 12, items 6 and 7: one validator from capture to lake. For every hostile value, the capture
server (real HTTP on 127.0.0.1), the SDK (local and remote) and ingest agree: what is acknowledged is
ingested without quarantine, what would be quarantined is refused per item with its field path, and
one bad item never costs the valid items of its batch."""

from __future__ import annotations

import httpx
import orjson
import pytest

from pipeline.capture import fast_validate
from pipeline.capture.remote_sdk import RemoteWorkspace
from pipeline.capture.workspace import Workspace
from pipeline.lake.ingest import ingest_outcomes, ingest_preferences, ingest_trajectories, read_quarantine
from tests.capture_helpers import ThreadServer

DAY = "2026-11-20"
HOLE = "__HOSTILE__"
BIG = b"1" + b"0" * 399  # a 400-digit integer
INT70 = b"1180591620717411303424"  # 2**70: beyond 64 bits, well inside a float's range


def trajectory(tid: str) -> dict:
    return {"trajectory_id": tid, "agent": "planner", "started_at": f"{DAY}T09:00:00Z",
            "messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "meta": {"input_tokens": 3},
                          "tool_calls": [{"id": "c1", "name": "calc", "arguments": {"x": 1}}]},
                         {"role": "tool", "content": "1", "tool_call_id": "c1", "name": "calc"},
                         {"role": "assistant", "content": "1"}], "metadata": {}, "tools": [{"name": "calc"}]}


def outcome(tid: str) -> dict:
    return {"trajectory_id": tid, "name": "reward", "value": 1.0, "recorded_at": f"{DAY}T10:00:00Z",
            "metadata": {}}


def preference(pid: str) -> dict:
    return {"preference_id": pid, "chosen": "a", "rejected": "b", "recorded_at": f"{DAY}T10:00:00Z", "metadata": {}}


def plant(record: dict, path: str, raw: bytes) -> bytes:
    """The record as JSON text with `raw` (any text, even what no JSON encoder writes) at `path`."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    holder = record
    for p in parents:
        holder = holder[p]
    holder[last] = HOLE
    return orjson.dumps(record).replace(orjson.dumps(HOLE), raw)


# (path in the record, raw JSON text planted there, the refusal's field path or None when it is accepted)
TRAJECTORY_CASES = {
    "input_tokens 10**30": ("messages.1.meta.input_tokens", b"1" + b"0" * 30, "messages.1.meta.input_tokens"),
    "400-digit metadata int": ("metadata.n", BIG, "metadata.n"),
    "NaN literal": ("metadata.n", b"NaN", "metadata.n"),
    "-Infinity literal": ("metadata.deep", b'{"a": [1, -Infinity]}', "metadata.deep.a.1"),
    "1e400 number": ("metadata.n", b"1e400", "metadata.n"),
    "unpaired surrogate": ("messages.0.content", b'"x\\ud800y"', "messages.0.content"),
    "surrogate in a key": ("metadata", b'{"\\udc00": 1}', "metadata"),
    "over-deep metadata": ("metadata.n", b"[" * 300 + b"]" * 300, "metadata.n.0.0"),
    "nesting past any parser": ("metadata.n", b"[" * 5000 + b"]" * 5000, "metadata.n.0.0"),
    "date out of range": ("started_at", b'"0001-01-01T00:00:00+01:00"', "started_at"),
    "cost Infinity": ("messages.1.meta.cost_usd", b'"Infinity"', "messages.1.meta.cost_usd"),
    "NaN in a tool definition": ("tools.0.x", b"NaN", "tools.0.x"),
    "big int in step meta extra": ("messages.1.meta.extra", BIG, "messages.1.meta.extra"),
    "NaN in tool-call arguments": ("messages.1.tool_calls.0.arguments.x", b"NaN", "messages.1.tool_calls.0.arguments.x"),
    "2**70 in tool-call arguments": ("messages.1.tool_calls.0.arguments.x", INT70, None),
    "400 digits in tool-call arguments": ("messages.1.tool_calls.0.arguments.x", BIG, None),
}
OUTCOME_CASES = {
    "value 'NaN'": ("value", b'"NaN"', "value"),
    "value 'Infinity'": ("value", b'"Infinity"', "value"),
    "value '-inf'": ("value", b'"-inf"', "value"),
    "value '1e400'": ("value", b'"1e400"', "value"),
    "value NaN literal": ("value", b"NaN", "value"),
    "value 1e400 number": ("value", b"1e400", "value"),
    "step 2**40": ("step", b"1099511627776", "step"),
    "400-digit metadata int": ("metadata.n", BIG, "metadata.n"),
    "surrogate label": ("label", b'"\\ud800"', "label"),
    "recorded_at out of range": ("recorded_at", b'"9999-12-31T23:59:59-01:00"', "recorded_at"),
}
PREFERENCE_CASES = {
    "NaN literal in metadata": ("metadata.n", b"NaN", "metadata.n"),
    "2**70 in metadata": ("metadata.n", INT70, "metadata.n"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("validation")
    srv = ThreadServer(home, require_auth=False).start()
    yield srv
    srv.stop()


def _post(server, ws: str, kind: str, items: list[bytes]) -> dict:
    if not Workspace(ws, server.home).exists():
        Workspace.create(ws, server.home)
    r = httpx.post(f"{server.url}/v1/workspaces/{ws}/{kind}", content=b"[" + b",".join(items) + b"]", timeout=30)
    assert r.status_code == 200, r.text[:500]  # one bad item never fails the batch
    return r.json()


def _check_refusal(body: dict, expected_path: str | None) -> None:
    if expected_path is None:
        assert body["accepted"] == 3 and body["errors"] == [], body
        return
    assert body["accepted"] == 2, body
    [err] = body["errors"]
    assert err["index"] == 1
    assert err["error"].startswith(f"{expected_path}:") or err["error"].startswith(f"{expected_path}."), err
    assert "\n" not in err["error"] and len(err["error"]) < 400


@pytest.mark.parametrize("case", list(TRAJECTORY_CASES))
def test_hostile_trajectory_values_are_refused_per_item_or_ingested(server, case):
    path, raw, refused_at = TRAJECTORY_CASES[case]
    ws_name = f"t{abs(hash(case)) % 10**8}"
    items = [orjson.dumps(trajectory("good-1")), plant(trajectory("hostile"), path, raw),
             orjson.dumps(trajectory("good-2"))]
    _check_refusal(_post(server, ws_name, "trajectories", items), refused_at)
    ws = Workspace(ws_name, server.home)
    df, stats = ingest_trajectories(ws, DAY)
    assert stats.quarantined == 0 and read_quarantine(ws) == []  # acknowledged ⇒ ingested
    expected = {"good-1", "good-2"} | ({"hostile"} if refused_at is None else set())
    assert set(df["trajectory_id"]) == expected
    if refused_at is None:  # integers beyond 64 bits in arguments keep their exact digits
        messages = orjson.loads(df.filter(df["trajectory_id"] == "hostile")["messages_json"][0])
        assert messages[1]["tool_calls"][0]["arguments"] == '{"x":' + raw.decode() + "}"


@pytest.mark.parametrize("case", list(OUTCOME_CASES))
def test_hostile_outcome_values_are_refused_per_item(server, case):
    path, raw, refused_at = OUTCOME_CASES[case]
    ws_name = f"o{abs(hash(case)) % 10**8}"
    items = [orjson.dumps(outcome("good-1")), plant(outcome("hostile"), path, raw), orjson.dumps(outcome("good-2"))]
    _check_refusal(_post(server, ws_name, "outcomes", items), refused_at)
    df, stats = ingest_outcomes(Workspace(ws_name, server.home))
    assert stats.quarantined == 0 and sorted(df["trajectory_id"]) == ["good-1", "good-2"]


@pytest.mark.parametrize("case", list(PREFERENCE_CASES))
def test_hostile_preference_values_are_refused_per_item(server, case):
    path, raw, refused_at = PREFERENCE_CASES[case]
    ws_name = f"p{abs(hash(case)) % 10**8}"
    items = [orjson.dumps(preference("good-1")), plant(preference("hostile"), path, raw),
             orjson.dumps(preference("good-2"))]
    _check_refusal(_post(server, ws_name, "preferences", items), refused_at)
    df, stats = ingest_preferences(Workspace(ws_name, server.home))
    assert stats.quarantined == 0 and sorted(df["preference_id"]) == ["good-1", "good-2"]


def test_the_batch_key_form_is_split_per_item_too(server):
    items = [orjson.dumps(outcome("good-1")), plant(outcome("hostile"), "value", b"NaN")]
    Workspace.create("keyed", server.home, exist_ok=True)
    r = httpx.post(f"{server.url}/v1/workspaces/keyed/outcomes", content=b'{"outcomes": [' + b",".join(items) + b"]}")
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert r.json()["errors"][0]["error"].startswith("value:")


def test_a_body_that_is_not_an_array_of_items_is_still_one_400(server):
    Workspace.create("broken", server.home, exist_ok=True)
    for body in (b'[{"trajectory_id": "x", "agent": "a"', b'[{"a": "unterminated}]', b"[1, 2] trailing"):
        r = httpx.post(f"{server.url}/v1/workspaces/broken/trajectories", content=body)
        assert r.status_code == 400 and "malformed JSON" in r.json()["detail"], (body, r.text)


def test_streamed_messages_are_checked_by_the_same_rules_before_they_are_acknowledged(server):
    Workspace.create("streamed", server.home, exist_ok=True)
    url = f"{server.url}/v1/workspaces/streamed/trajectories/s1"
    bad = b'{"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "meta": {"input_tokens": 1' + b"0" * 30 + b"}}]}"
    r = httpx.post(f"{url}/messages", content=bad)
    assert r.status_code == 422 and r.json()["errors"][0]["error"].startswith("meta.input_tokens:"), r.text
    r = httpx.post(f"{url}/messages", content=b'{"messages": [{"role": "user", "content": "x\\ud800"}]}')
    assert r.status_code == 400 and "messages.0.content" in r.json()["detail"], r.text
    r = httpx.post(f"{url}/messages", content=b'{"messages": [{"role": "user", "content": "hi"}], "trajectory": {"agent": "a", "metadata": {"n": NaN}}}')
    assert r.status_code == 400 and "trajectory.metadata.n" in r.json()["detail"], r.text
    assert httpx.post(f"{url}/messages", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    assert httpx.post(f"{url}/close", json={"agent": "a", "started_at": f"{DAY}T09:00:00Z"}).status_code == 200
    _, stats = ingest_trajectories(Workspace("streamed", server.home), DAY)
    assert stats.quarantined == 0 and stats.valid == 1


# ---- the SDK applies the same validator, in the caller --------------------------------------------------
PY_CASES = [  # (kind, record, field path of the refusal)
    ("outcome", {**outcome("t"), "value": "NaN"}, "value"),
    ("outcome", {**outcome("t"), "value": float("inf")}, "value"),
    ("outcome", {**outcome("t"), "metadata": {"n": 10**400}}, "metadata.n"),
    ("outcome", {**outcome("t"), "label": "a\ud800"}, "label"),
    ("preference", {**preference("p"), "metadata": {"n": float("nan")}}, "metadata.n"),
    ("trajectory", {**trajectory("t"), "metadata": {"n": 10**30}}, "metadata.n"),
    ("trajectory", {**trajectory("t"), "metadata": {"n": {1, 2}}}, "metadata.n"),
    ("trajectory", {**trajectory("t"), "messages": [{"role": "user", "content": "\udc00"}]}, "messages.0.content"),
    ("trajectory", {**trajectory("t"), "started_at": "9999-12-31T23:59:59-01:00"}, "started_at"),
]
WRITE = {"trajectory": "write_trajectories", "outcome": "write_outcomes", "preference": "write_preferences"}


@pytest.mark.parametrize("kind,record,field", PY_CASES, ids=[f"{k}-{f}-{i}" for i, (k, _, f) in enumerate(PY_CASES)])
def test_sdk_local_and_remote_refuse_what_the_lake_would_quarantine(server, tmp_path, kind, record, field):
    local = Workspace.create("sdk", tmp_path)
    with pytest.raises(ValueError, match=rf"(^|\W){field.replace('.', '[.]')}[.:]"):
        getattr(local, WRITE[kind])([record])
    assert not any((local.landing / kind).glob("*/*.ndjson"))  # nothing of the call was written
    remote = RemoteWorkspace(server.url, "sdk", None, flush_interval=0.01)
    try:
        with pytest.raises(ValueError, match=rf"(^|\W){field.replace('.', '[.]')}[.:]"):
            getattr(remote, WRITE[kind])([record])
    finally:
        remote.close(5)


def test_recorder_metadata_set_after_the_start_is_checked_too(tmp_path):
    ws = Workspace.create("rec", tmp_path)
    with pytest.raises(ValueError, match=r"metadata\.score"):
        with ws.trajectory("planner") as run:
            run.user("hi")
            run.set_metadata(score=float("nan"))


def test_fast_path_and_ingest_agree_on_every_case():
    """The hot path alone (no server): accepted bytes always validate again as the lake reads them."""
    from pipeline.schema import Trajectory

    for case, (path, raw, refused_at) in TRAJECTORY_CASES.items():
        res = fast_validate.validate_json(plant(trajectory("x"), path, raw), 0, "w")
        if refused_at is None:
            assert isinstance(res, fast_validate.Accepted), (case, res)
            Trajectory.model_validate(orjson.loads(res.json))
        else:
            assert isinstance(res, fast_validate.Rejected) and res.error.startswith(refused_at), (case, res)


@pytest.mark.parametrize("body", [b'[{"trajectory_id": "\\ud800"}]', b"[" * 5000 + b"]" * 5000])
def test_items_that_used_to_fail_their_whole_batch_are_refused_alone(server, body):
    """Before issue 12 these were one 400 for the whole batch (tests/test_server.py listed them)."""
    Workspace.create("alone", server.home, exist_ok=True)
    for kind in ("trajectories", "outcomes", "preferences"):
        r = httpx.post(f"{server.url}/v1/workspaces/alone/{kind}", content=body)
        assert r.status_code == 200 and r.json()["rejected"] == 1, (kind, r.text[:300])
        assert r.json()["errors"][0]["error"].split(":")[0] in ("trajectory_id", "0.0", "<record>") or \
            r.json()["errors"][0]["error"].startswith("0.0."), r.text[:300]


def test_otlp_evaluation_score_nan_is_refused_and_the_trace_still_lands(server):
    from tests.test_otlp_assembly import DAY as ODAY
    from tests.test_otlp_assembly import Q, T, attrs, chat, export, ns, text

    ws = Workspace.create("otlp-nan", server.home, exist_ok=True)
    verdict = {"name": "gen_ai.evaluation.result", "timeUnixNano": ns(ODAY, 2),
               "attributes": attrs({"gen_ai.evaluation.name": "helpful", "gen_ai.evaluation.score.value": "NaN"})}
    body = export(chat(T, "01" * 8, ODAY, 1, [Q], [text("assistant", "shipped")]))
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["events"] = [verdict]
    r = httpx.post(f"{server.url}/v1/traces", json=body, headers={"x-tracemill-workspace": ws.name}, timeout=10)
    assert r.status_code == 200, r.text
    assert "value" in r.json()["partialSuccess"]["errorMessage"], r.text  # refused, with its field
    df, stats = ingest_trajectories(ws, ODAY)
    assert df.height == 1 and stats.quarantined == 0
    outcomes, ostats = ingest_outcomes(ws)
    assert outcomes.height == 0 and ostats.quarantined == 0


def test_token_counts_that_fit_one_by_one_but_not_summed_do_not_wedge_the_day(server):
    ws = Workspace.create("tokens-sum", server.home, exist_ok=True)
    t = trajectory("summed")
    for m in t["messages"]:
        m["meta"] = {"input_tokens": 2**62, "output_tokens": 2**62}
    assert _post(server, ws.name, "trajectories", [orjson.dumps(t)])["accepted"] == 1
    df, stats = ingest_trajectories(ws, DAY)  # the Int64 sum column saturates instead of failing the day
    assert stats.quarantined == 0 and df["input_tokens"][0] == 2**63 - 1
