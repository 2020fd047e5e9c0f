"""Importers against the real third-party fixtures: every expected count is derived here from the raw
file by a deliberately simple counter (never copied from the importer's output), plus the quirks
(double-encoded arguments, reused call ids, call id in `id`, missing content), detection, error
reporting for a bad JSONL line, OTLP files written from real OpenTelemetry SDK spans, and a durable,
idempotent import into a Workspace."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.capture.importers import FORMATS, UnknownFormatError, detect_format, import_file, import_paths
from pipeline.capture.importers.base import Context
from pipeline.capture.importers.calls import decode_arguments
from pipeline.capture.importers.openai import convert_chat
from pipeline.capture.importers.source import Source
from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace
from pipeline.schema import Outcome, Preference, Trajectory

FIX = Path(os.environ.get("TRACEMILL_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "realworld")
pytestmark = pytest.mark.skipif(not FIX.exists(), reason="real-world fixtures not available")


def _load(path: Path):
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _records(path: Path) -> list:
    data = _load(path)
    return data if isinstance(data, list) else [data]


# ---- independent counters: (trajectories, messages, tool calls, outcomes) --------------------------
def _count_openai(path):
    recs = _records(path)
    return (len(recs), sum(len(r["messages"]) for r in recs),
            sum(len(m.get("tool_calls") or []) for r in recs for m in r["messages"]), 0)


def _count_tau(path):
    recs = _records(path)
    numeric = sum(isinstance(v, float | int) for r in recs for v in ((r["info"].get("reward_info") or {}).get("info") or {}).values())
    return (len(recs), sum(len(r["traj"]) for r in recs),
            sum(len(m.get("tool_calls") or []) for r in recs for m in r["traj"]), len(recs) + numeric)


def _count_fewshot(path):
    recs = _records(path)
    lines = [ln for r in recs for ln in r["messages_display"].split("\n")]
    return len(recs), sum(bool(re.match(r"(user|assistant|tool): ", ln)) for ln in lines), 0, 0


def _count_tau2(path):
    sims = _load(path)["simulations"]
    outs = sum(1 + 1 + len(s["reward_info"]["reward_breakdown"]) + bool(s["termination_reason"]) for s in sims)
    return (len(sims), sum(len(s["messages"]) for s in sims),
            sum(len(m.get("tool_calls") or []) for s in sims for m in s["messages"]), outs)


def _count_swe(path):
    d = _load(path)
    return (1, len(d["history"]), sum(len(m.get("tool_calls") or []) for m in d["history"]),
            int(bool(d.get("info", {}).get("exit_status"))))


def _count_toolbench(path):
    d = _load(path)
    chain = d["answer_generation"]["train_messages"][-1]
    return 1, len(chain), sum("function_call" in m for m in chain), 2


def _results(value, pending):
    """Messages a tool turn becomes: a bundled JSON array answering k>1 parallel calls splits in k."""
    try:
        parsed = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        parsed = None
    return len(parsed) if pending > 1 and isinstance(parsed, list) and len(parsed) == pending else 1


def _count_sharegpt(path):
    recs, msgs, calls = _records(path), 0, 0
    for r in recs:
        pending = 0
        for turn in r["conversations"]:
            if turn["from"] == "function_call":
                value = json.loads(turn["value"])
                pending = len(value) if isinstance(value, list) else 1
                calls += pending
                msgs += 1
            elif turn["from"] == "observation":
                msgs += _results(turn["value"], pending)
            else:
                msgs += 1
    return len(recs), msgs, calls, 0


def _count_llamafactory(path):
    recs, msgs, calls = _records(path), 0, 0
    for r in recs:
        pending = 0
        for m in r["messages"]:
            if m["role"] == "tool":
                msgs += _results("".join(p["value"] for p in m["content"]), pending)
                continue
            pending = sum(p["type"] == "tool_call" for p in m["content"])
            calls += pending
            msgs += 1
    return len(recs), msgs, calls, 0


def _count_otel_messages(path):
    msgs = calls = 0
    for m in _load(path):
        kinds = [p["type"] for p in m["parts"]]
        calls += sum(k.endswith("tool_call") for k in kinds)
        runs, prev = 0, None  # tool results stand alone; other consecutive parts form one message
        for k in kinds:
            runs += k.endswith("_response") or prev is None or prev.endswith("_response")
            prev = k
        msgs += max(runs, 1)
    return 1, msgs, calls, 0


def _lf_count(raw) -> int:
    """Turns in a Langfuse generation input/output, whatever dialect it was logged in."""
    if isinstance(raw, str):
        lines = re.findall(r"^(system|user|assistant): ", raw, flags=re.M)
        return len(lines) or 1
    if isinstance(raw, dict):  # one message, or a Response whose output items form one assistant turn
        return 1
    n, prev = 0, None
    for m in raw:
        if "parts" in m:
            n += sum(p["type"] == "tool_call_response" for p in m["parts"]) or 1
        elif m.get("type") == "function_call":
            n += prev != "function_call"
        elif m.get("role") == "tool" and not m.get("tool_call_id") and isinstance(m.get("content"), dict):
            pass  # LangChain's tool definitions disguised as tool messages
        else:
            n += 1
        prev = m.get("type")
    return n


def _count_langfuse(path):
    d = _load(path)
    gens = sorted((o for o in d["observations"] if o["type"] == "GENERATION"), key=lambda o: o["startTime"])
    threads = {}
    for g in gens:  # a thread is identified by its first input turn; its last call holds all of it
        first = g["input"][0] if isinstance(g["input"], list) else g["input"]
        threads[json.dumps(first, sort_keys=True)] = g
    msgs = calls = 0
    for g in threads.values():
        out = g["output"]
        msgs += _lf_count(g["input"]) + _lf_count(out) + bool(isinstance(out, dict) and out.get("instructions"))
    for g in gens:
        text = json.dumps(g["output"])
        calls += len(set(re.findall(r'"(?:id|call_id)": "(call_[A-Za-z0-9]+)"', text)))
    return len(threads), msgs, calls, len(d["trace"].get("scores") or [])


CASES = {
    "openai_chat_finetune_jsonl/drone_training.first6.jsonl": ("openai_chat", _count_openai),
    "tau_bench/gpt-4o-airline.subset5.json": ("tau_bench", _count_tau),
    "tau_bench/MockAirlineDomainEnv-few_shot.head3.jsonl": ("tau_bench_fewshot", _count_fewshot),
    "tau2_bench/2025-10-08T10-14-05_airline_tighter_policy_llm_agent_grok-4_user_simulator_grok-4.json":
        ("tau2", _count_tau2),
    "sharegpt/fastchat_dummy_conversation.first5.json": ("sharegpt", _count_sharegpt),
    "sharegpt/llamafactory_glaive_toolcall_en_demo.subset.json": ("sharegpt", _count_sharegpt),
    "sharegpt/llamafactory_glaive_toolcall_zh_demo.subset2.json": ("sharegpt", _count_sharegpt),
    "sharegpt/llamafactory_reason_tool_use_demo_50.head5.jsonl": ("llamafactory_v1", _count_llamafactory),
    **{f"toolbench/{n}": ("toolbench", _count_toolbench) for n in (
        "G1_answer_10_ChatGPT_DFS_woFilter_w2.json", "G2_answer_127_ChatGPT_DFS_woFilter_w2.json",
        "G3_answer_21_ChatGPT_DFS_woFilter_w2.json")},
    **{f"swe_agent_traj/{n}": ("swe_agent", _count_swe) for n in (
        "function_calling_simple.traj", "marshmallow-code__marshmallow-1867.function_calling_replace.traj",
        "swe-agent__test-repo-i1.legacy_v0.traj")},
    **{f"langfuse_trace_export/{p.name}": ("langfuse", _count_langfuse)
       for p in sorted((FIX / "langfuse_trace_export").glob("*.json"))},
    **{f"otel_genai_semconv/extracted_json_blocks/{p.name}": ("otel_genai_messages", _count_otel_messages)
       for p in sorted((FIX / "otel_genai_semconv/extracted_json_blocks").glob("*messages*.json"))},
}
NOT_TRAJECTORIES = ["toolbench/G1_query.json", "otel_genai_semconv/gen-ai-input-messages.json",
                    "otel_genai_semconv/extracted_json_blocks/05_gen-ai-tool-definitions-tool-call-span-0.json",
                    "otel_genai_semconv/extracted_json_blocks/11_gen-ai-system-instructions.json"]


@pytest.mark.parametrize("rel", sorted(CASES))
def test_fixture_counts_and_detection(rel):
    fmt, counter = CASES[rel]
    path = FIX / rel
    assert detect_format(path) == fmt
    r = import_file(path)
    assert r.errors == []
    n_traj, n_msgs, n_calls, n_outcomes = counter(path)
    assert (len(r.trajectories), r.n_messages, r.n_tool_calls, len(r.outcomes)) == (
        n_traj, n_msgs, n_calls, n_outcomes)
    for t in r.trajectories:
        assert t.metadata["source"] == fmt and "original" in t.metadata
        ids = [c.id for m in t.messages for c in m.tool_calls]
        assert len(ids) == len(set(ids)), "call ids must be unique within a trajectory"
        linked = [m.tool_call_id for m in t.messages if m.role == "tool" and m.tool_call_id]
        assert set(linked) <= set(ids) and len(linked) == len(set(linked))
        for c in (c for m in t.messages for c in m.tool_calls):
            if c.arguments.lstrip().startswith(("{", "[", '"')):
                assert not isinstance(orjson.loads(c.arguments), str), "arguments must be one JSON level"
    assert {o.trajectory_id for o in r.outcomes} <= {t.trajectory_id for t in r.trajectories}


@pytest.mark.parametrize("rel", NOT_TRAJECTORIES)
def test_files_that_hold_no_trajectories_are_refused_with_a_reason(rel):
    with pytest.raises(UnknownFormatError, match="not|no registered"):
        detect_format(FIX / rel)


def test_reimport_is_byte_stable_and_timeless_sources_get_the_fixed_epoch():
    for rel in ("tau_bench/gpt-4o-airline.subset5.json", "langfuse_trace_export/pydantic-ai-tools-2025-12-04.json"):
        a, b = import_file(FIX / rel), import_file(FIX / rel)
        assert [t.model_dump_json() for t in a.trajectories] == [t.model_dump_json() for t in b.trajectories]
        assert [o.outcome_id for o in a.outcomes] == [o.outcome_id for o in b.outcomes]
    tau = import_file(FIX / "tau_bench/gpt-4o-airline.subset5.json").trajectories[0]
    today = datetime.now(UTC).date().isoformat()  # issue 15: the import day, no longer 1970-01-01
    assert tau.day == today and tau.metadata["time_source"] == "default"
    lf = import_file(FIX / "langfuse_trace_export/langgraph-2025-08-22.json").trajectories[0]
    assert lf.day == "2025-08-22" and lf.metadata["time_source"] == "source"


def test_double_encoded_arguments_are_decoded_to_one_level():
    path = FIX / "openai_chat_finetune_jsonl/drone_training.first6.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    r = import_file(path)
    for rec, t in zip(raw, r.trajectories, strict=True):
        src = rec["messages"][-1]["tool_calls"][0]["function"]["arguments"]
        once = json.loads(src)
        want = json.loads(once) if isinstance(once, str) else once
        assert json.loads(t.messages[-1].tool_calls[0].arguments) == want
        assert t.messages[-1].content is None  # the assistant turn has no `content` key at all
    assert sum(t.metadata.get("import_notes", {}).get("double_encoded_arguments", 0) for t in r.trajectories) == 4
    assert decode_arguments(json.dumps(json.dumps(json.dumps({"a": 1})))) == '{"a": 1}'
    assert decode_arguments('"plain"') == '"plain"' and decode_arguments("not json") == "not json"


def test_reused_call_ids_are_made_unique_and_results_still_link():
    path = FIX / "tau_bench/gpt-4o-airline.subset5.json"
    raw = max(_load(path), key=lambda r: len(r["traj"]))
    src_ids = [tc["id"] for m in raw["traj"] for tc in m.get("tool_calls") or []]
    assert len(src_ids) > len(set(src_ids)), "fixture quirk: tau-bench reuses call ids"
    t = next(t for t in import_file(path).trajectories if len(t.messages) == len(raw["traj"]))
    for i, m in enumerate(t.messages):
        if m.role == "tool":  # each result answers the call just before it, by name and by (renamed) id
            call = t.messages[i - 1].tool_calls[0]
            assert (m.tool_call_id, m.name) == (call.id, call.name)
            src = raw["traj"][i]["tool_call_id"]
            assert call.id == src or call.id.startswith(src + "_")
    # all ids identical ("call_id") with parallel calls: results link in order
    rec = {"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": [
        {"id": "call_id", "type": "function", "function": {"name": n, "arguments": "{}"}} for n in ("a", "b")]},
        {"role": "tool", "tool_call_id": "call_id", "content": "A"},
        {"role": "tool", "tool_call_id": "call_id", "content": "B"}]}
    traj = next(iter(convert_chat(Source.from_value(rec), Context(fmt="openai_chat"))))
    a, b = traj.messages[1].tool_calls
    assert (a.id, b.id) == ("call_id", "call_id_2")
    assert [traj.messages[2].tool_call_id, traj.messages[3].tool_call_id] == [a.id, b.id]


def test_a_bad_tau2_simulation_is_reported_and_the_others_import(tmp_path):
    data = _load(FIX / "tau2_bench/2025-10-08T10-14-05_airline_tighter_policy_llm_agent_grok-4_user_simulator_grok-4.json")
    data["simulations"][2]["messages"][3]["role"] = 7
    (tmp_path / "results.json").write_text(json.dumps(data))
    r = import_file(tmp_path / "results.json")
    assert len(r.trajectories) == len(data["simulations"]) - 1
    assert [(e.index, e.field) for e in r.errors] == [(0, "simulations.2.messages.3.role")]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=8),
    max_size=4))
def test_arguments_always_end_as_one_json_level(obj):
    once = json.dumps(obj)
    assert decode_arguments(once) == once
    assert json.loads(decode_arguments(json.dumps(once))) == obj
    assert json.loads(decode_arguments(obj)) == obj


def test_tau2_call_id_lives_in_id_and_usage_goes_to_step_meta():
    path = FIX / "tau2_bench/2025-10-08T10-14-05_airline_tighter_policy_llm_agent_grok-4_user_simulator_grok-4.json"
    sims = _load(path)["simulations"]
    r = import_file(path)
    for sim, t in zip(sims, r.trajectories, strict=True):
        assert t.trajectory_id == f"tau2:{sim['id']}" and t.started_at.isoformat().startswith(sim["start_time"])
        for raw, m in zip(sim["messages"], t.messages, strict=True):
            if raw["role"] == "tool":
                assert m.tool_call_id == raw["id"] and "tool_call_id" not in raw
            if raw.get("usage"):
                assert m.meta.input_tokens == raw["usage"]["prompt_tokens"]
    assert {o.name for o in r.outcomes} >= {"reward", "db_reward", "termination_reason"}


def test_toolbench_and_swe_agent_outcomes_and_errors():
    g2 = import_file(FIX / "toolbench/G2_answer_127_ChatGPT_DFS_woFilter_w2.json")
    assert {(o.name, o.value, o.label) for o in g2.outcomes} == {("win", 0.0, None), ("finish_type", None, "give_up")}
    assert g2.trajectories[0].messages[-1].tool_calls[0].name == "Finish"
    g3 = import_file(FIX / "toolbench/G3_answer_21_ChatGPT_DFS_woFilter_w2.json").trajectories[0]
    raw = _load(FIX / "toolbench/G3_answer_21_ChatGPT_DFS_woFilter_w2.json")["answer_generation"]["train_messages"][-1]
    assert [m.is_error for m in g3.messages if m.role == "tool"] == [
        bool(json.loads(m["content"])["error"]) for m in raw if m["role"] == "function"]
    legacy = import_file(FIX / "swe_agent_traj/swe-agent__test-repo-i1.legacy_v0.traj")
    assert legacy.outcomes[0].label == "submitted" and legacy.trajectories[0].metadata["swe_agent_format"] == "0.x"
    assert "history" not in legacy.trajectories[0].metadata["original"]


def test_langfuse_threads_tools_and_scores():
    lg = import_file(FIX / "langfuse_trace_export/langgraph-2025-08-22.json")
    t = lg.trajectories[0]
    assert [x["function"]["name"] for x in t.tools] == ["Web-Search"]  # moved out of the fake tool messages
    assert [m.role for m in t.messages] == ["user", "user", "assistant", "tool", "assistant"]
    assert t.messages[2].meta.input_tokens == 60 and t.messages[3].tool_call_id == t.messages[2].tool_calls[0].id
    assert {o.name: o.source for o in lg.outcomes} == {"hallucination": "judge", "toxicity": "judge"}
    pa = import_file(FIX / "langfuse_trace_export/pydantic-ai-tools-2025-12-04.json").trajectories
    assert pa[1].trajectory_id == pa[0].trajectory_id + ":1" and pa[1].messages[0].content.startswith("You are a joke critic")


def test_malformed_jsonl_records_are_reported_with_line_and_field(tmp_path):
    lines = (FIX / "openai_chat_finetune_jsonl/drone_training.first6.jsonl").read_text().splitlines()
    bad_field = json.loads(lines[4])
    del bad_field["messages"][2]["tool_calls"][0]["function"]["name"]
    bad_role = json.loads(lines[5])
    bad_role["messages"][1]["role"] = "robot"
    lines[2] = lines[2][:-7]  # truncated JSON
    lines[4], lines[5] = json.dumps(bad_field), json.dumps(bad_role)
    (tmp_path / "batch.jsonl").write_text("\n".join(lines) + "\n")
    r = import_file(tmp_path / "batch.jsonl")
    assert len(r.trajectories) == 3
    errs = {e.line: e for e in r.errors}
    assert set(errs) == {3, 5, 6}
    assert "invalid JSON" in errs[3].reason
    assert errs[5].field == "messages.2.tool_calls.0" and "name" in errs[5].reason
    assert errs[6].field == "messages.1.role" and "robot" in errs[6].reason
    assert "line 5: messages.2.tool_calls.0" in str(errs[5])


def test_anthropic_responses_and_preference_formats(tmp_path):
    anth = {"model": "claude-x", "system": "be terse", "tools": [{"name": "calc", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": [{"type": "thinking", "thinking": "add", "signature": "s"},
                                                           {"type": "tool_use", "id": "tu1", "name": "calc",
                                                            "input": {"e": "2+2"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "boom",
                                                       "is_error": True}, {"type": "text", "text": "retry?"}]}],
            "response": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                         "content": [{"type": "text", "text": "4"}], "stop_reason": "end_turn",
                         "usage": {"input_tokens": 10, "output_tokens": 1}}}
    resp = {"id": "resp_1", "object": "response", "model": "gpt-x", "instructions": "sys", "created_at": 1759223040,
            "input": [{"role": "user", "content": "weather?"}],
            "output": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "need tool"}]},
                       {"type": "function_call", "call_id": "c1", "name": "wx", "arguments": '{"city":"Oslo"}'}],
            "usage": {"input_tokens": 5, "output_tokens": 7}}
    pref = {"input": {"messages": [{"role": "user", "content": "hi"}]},
            "preferred_output": [{"role": "assistant", "content": "hello"}],
            "non_preferred_output": [{"role": "assistant", "content": "go away"}]}
    for name, rec in (("a.json", anth), ("r.jsonl", resp), ("p.jsonl", pref)):
        (tmp_path / name).write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    a = import_file(tmp_path / "a.json")
    assert a.format == "anthropic_messages" and len(a.trajectories) == 2
    m = a.trajectories[0].messages
    assert [x.role for x in m] == ["system", "user", "assistant", "tool", "user", "assistant"]
    assert m[2].reasoning == "add" and m[3].is_error and m[3].tool_call_id == "tu1" and m[5].meta.output_tokens == 1
    r = import_file(tmp_path / "r.jsonl")
    assert r.format == "openai_responses"
    rm = r.trajectories[0].messages
    assert [x.role for x in rm] == ["system", "user", "assistant"] and rm[2].reasoning == "need tool"
    assert rm[2].tool_calls[0].id == "c1" and rm[2].meta.input_tokens == 5
    p = import_file(tmp_path / "p.jsonl")
    assert p.format == "openai_chat" and len(p.trajectories) == 4 and len(p.preferences) == 2
    assert p.preferences[0].chosen == p.trajectories[0].trajectory_id


def _otlp_file(path: Path) -> None:
    """Write real SDK spans as OTLP/JSON lines (the Collector file exporter's layout)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    msg = lambda role, *parts: {"role": role, "parts": list(parts)}  # noqa: E731
    text = lambda s: {"type": "text", "content": s}  # noqa: E731
    call = {"type": "tool_call", "id": "call_1", "name": "wx", "arguments": {"city": "Oslo"}}
    turn1 = [msg("user", text("Weather in Oslo?"))]
    with tracer.start_as_current_span("invoke_agent wx", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "wx-agent", "gen_ai.conversation.id": "c-9"}):
        with tracer.start_as_current_span("chat m", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 11,
                "gen_ai.system_instructions": json.dumps([text("be brief")]),
                "gen_ai.input.messages": json.dumps(turn1), "gen_ai.output.messages": json.dumps([msg("assistant", call)]),
                "gen_ai.tool.definitions": json.dumps([{"type": "function", "name": "wx"}])}):
            pass
        with tracer.start_as_current_span("execute_tool wx", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "wx", "gen_ai.tool.call.id": "call_1"}) as s:
            s.set_status(Status(StatusCode.ERROR, "timeout"))
        hist = turn1 + [msg("assistant", call), msg("tool", {"type": "tool_call_response", "id": "call_1",
                                                             "response": "timeout"})]
        with tracer.start_as_current_span("chat m", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(hist),
                "gen_ai.output.messages": json.dumps([msg("assistant", text("Sorry, no data."))])}) as s:
            s.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "relevance",
                                                     "gen_ai.evaluation.score.value": 0.25})
    with tracer.start_as_current_span("chat m", attributes={  # a later trace of the same conversation
            "gen_ai.operation.name": "chat", "gen_ai.conversation.id": "c-9",
            "gen_ai.input.messages": json.dumps(hist + [msg("assistant", text("Sorry, no data.")),
                                                        msg("user", text("Thanks"))]),
            "gen_ai.output.messages": json.dumps([msg("assistant", text("Bye"))])}):
        pass
    with tracer.start_as_current_span("agent", attributes={"openinference.span.kind": "AGENT"}):
        with tracer.start_as_current_span("ChatCompletion", attributes={  # OpenInference, its own trace
                "openinference.span.kind": "LLM", "llm.model_name": "oi", "llm.token_count.prompt": 3,
                "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "add 1 2",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.tool_calls.0.tool_call.id": "t1",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "add",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"a": 1, "b": 2}'}):
            pass
        with tracer.start_as_current_span("add", attributes={"openinference.span.kind": "TOOL", "tool.name": "add",
                                                             "output.value": "3"}):
            pass
    with tracer.start_as_current_span("GET /health"):
        pass

    def any_value(v):
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        if isinstance(v, float):
            return {"doubleValue": v}
        if isinstance(v, tuple | list):
            return {"arrayValue": {"values": [any_value(x) for x in v]}}
        return {"stringValue": str(v)}

    def attrs(d):
        return [{"key": k, "value": any_value(v)} for k, v in d.items()]

    lines = []
    for sp in exporter.get_finished_spans():
        span = {"traceId": f"{sp.context.trace_id:032x}", "spanId": f"{sp.context.span_id:016x}",
                "parentSpanId": f"{sp.parent.span_id:016x}" if sp.parent else "", "name": sp.name,
                "kind": sp.kind.value + 1, "startTimeUnixNano": str(sp.start_time), "endTimeUnixNano": str(sp.end_time),
                "attributes": attrs(sp.attributes), "status": {"code": sp.status.status_code.value},
                "events": [{"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": attrs(e.attributes)}
                           for e in sp.events]}
        lines.append(json.dumps({"resourceSpans": [{"resource": {"attributes": attrs(sp.resource.attributes)},
                                                    "scopeSpans": [{"scope": {"name": "test"}, "spans": [span]}]}]}))
    path.write_text("\n".join(lines) + "\n{broken\n")


def test_otlp_json_from_sdk_spans(tmp_path):
    path = tmp_path / "traces.jsonl"
    _otlp_file(path)
    assert detect_format(path) == "otlp_json"
    r = import_file(path)
    by_agent = {t.agent.name: t for t in r.trajectories}
    assert set(by_agent) == {"wx-agent", "weather-svc"}  # conversation c-9 (two traces) + the OpenInference trace
    conv = by_agent["wx-agent"]
    assert conv.trajectory_id == "otlp-conversation-c-9" and conv.session_id == "c-9" and len(conv.metadata["trace_ids"]) == 2
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert conv.messages[3].is_error and conv.messages[3].tool_call_id == "call_1"  # span status ERROR
    assert conv.messages[2].meta.input_tokens == 11 and conv.tools[0]["function"]["name"] == "wx"
    assert [(o.name, o.value, o.source) for o in r.outcomes] == [("relevance", 0.25, "judge")]
    oi = by_agent["weather-svc"]
    assert [m.role for m in oi.messages] == ["user", "assistant", "tool"]  # result filled in from the TOOL span
    assert json.loads(oi.messages[1].tool_calls[0].arguments) == {"a": 1, "b": 2} and oi.messages[2].content == "3"
    reasons = sorted(e.reason for e in r.errors)
    assert len(reasons) == 2 and "invalid JSON" in reasons[0] and "nothing to import" in reasons[1]
    # the live capture endpoint's hook: one export request → validated dicts with the same ids
    from pipeline.capture.importers.otlp import otlp_to_records

    lines = [json.loads(line) for line in path.read_text().splitlines()[:-1]]
    trajs, outs = otlp_to_records({"resourceSpans": [rs for x in lines for rs in x["resourceSpans"]]})
    assert sorted(Trajectory.model_validate(t).trajectory_id for t in trajs) == sorted(
        t.trajectory_id for t in r.trajectories)
    assert [Outcome.model_validate(o).outcome_id for o in outs] == [o.outcome_id for o in r.outcomes]


def test_import_paths_writes_valid_landing_records_idempotently(tmp_path):
    ws = Workspace.create("imports", home=tmp_path)
    dirs = [FIX / "tau_bench", FIX / "tau2_bench", FIX / "langfuse_trace_export", FIX / "toolbench"]
    first = import_paths(dirs, ws, progress=False)
    assert first.trajectories == sum(len(import_file(f.path).trajectories) for f in first.files if f.format)
    assert first.errors == [] and any("G1_query" in p for p, _ in first.skipped)
    assert any(p.endswith("LICENSE") for p, _ in first.skipped)
    second = import_paths(dirs, ws, progress=True)
    ws.close()
    assert (second.trajectories, second.outcomes) == (first.trajectories, first.outcomes)
    models = {"trajectory": Trajectory, "outcome": Outcome, "preference": Preference}
    seen: dict[str, list[bytes]] = {}
    for kind, model in models.items():
        for line in read_landed(ws.landing, kind):
            assert line.error is None
            obj = model.model_validate(line.record)
            key = getattr(obj, "trajectory_id" if kind == "trajectory" else f"{kind}_id")
            seen.setdefault(f"{kind}:{key}", []).append(orjson.dumps(line.record))
    assert sum(k.startswith("trajectory:") for k in seen) == first.trajectories
    assert all(len(v) == 2 and v[0] == v[1] for v in seen.values()), "re-import must repeat records byte for byte"


def test_registry_lists_formats():
    assert {"openai_chat", "openai_responses", "anthropic_messages", "sharegpt", "llamafactory_v1", "langfuse",
            "otlp_json", "otel_genai_messages", "tau_bench", "tau2", "swe_agent", "toolbench"} <= set(FORMATS)
