"""Coding-agent session files (Claude Code, Codex, Gemini CLI, OpenHands, Inspect AI, LangSmith, aider,
mini-swe-agent, Claude Managed Agents) through the real CLI: `tracemill import PATH --workspace W` with no
`--format`. Every expected count (sessions, messages, tool calls, tool results) comes from a small counter
written here from the format descriptions in the fixtures' README, by plain JSON parsing, never from the
importer's code. Plus: re-importing a grown Claude Code session replaces its trajectory (checked through
a real Workspace and ingest), Agents SDK input lists are not mistaken for OpenAI chat, and no base64
image reaches message text."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pipeline.capture.importers import detect_format, import_file, import_paths
from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace
from pipeline.cli.main import app
from pipeline.lake.ingest import ingest_trajectories

_ENV = os.environ.get("TRACEMILL_FIXTURES")
FIX = (Path(_ENV).parent if _ENV else Path(__file__).resolve().parents[2] / "shared" / "fixtures") / "coding_agents"
pytestmark = pytest.mark.skipif(not FIX.exists(), reason="coding-agent fixtures not available")


def _lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- independent counters: (sessions, messages, tool calls, tool results) --------------------------
def _count_claude_code(path):
    recs = [r for r in _lines(path) if r.get("type") in ("user", "assistant") and isinstance(r.get("message"), dict)]
    sessions = 1 + sum(1 for r in recs if r.get("isSidechain") and r.get("parentUuid") is None)
    msg_ids = {r["message"]["id"] for r in recs if r["type"] == "assistant"}
    calls = {b["id"] for r in recs if r["type"] == "assistant" for b in r["message"]["content"]
             if isinstance(b, dict) and b.get("type") == "tool_use"}
    results = user_turns = 0
    for r in recs:
        if r["type"] != "user":
            continue
        content = r["message"]["content"]
        blocks = content if isinstance(content, list) else [content]
        results += sum(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks)
        user_turns += any(not (isinstance(b, dict) and b.get("type") == "tool_result") for b in blocks)
    return sessions, len(msg_ids) + user_turns + results, len(calls), results


def _count_codex(path):
    lines = _lines(path)
    items = [x["payload"] for x in lines if x["type"] == "response_item"]
    meta = next(x["payload"] for x in lines if x["type"] == "session_meta")
    messages, in_assistant = int(bool(meta.get("instructions"))), False
    for it in items:
        assistant_side = it["type"] in ("reasoning", "function_call") or it.get("role") == "assistant"
        if assistant_side and not in_assistant:
            messages += 1
        elif not assistant_side:
            messages += 1
        in_assistant = assistant_side
    calls = sum(it["type"] == "function_call" for it in items)
    return 1, messages, calls, sum(it["type"] == "function_call_output" for it in items)


def _count_gemini(path):
    d = json.loads(path.read_text())
    chat = [m for m in d["messages"] if m["type"] in ("user", "gemini")]
    calls = sum(len(m.get("toolCalls") or []) for m in chat)
    return 1, len(chat) + calls, calls, calls


def _count_openhands(path):
    events = json.loads(path.read_text())
    action_ids, messages, calls, results, last_response = set(), 0, 0, 0, object()
    for e in events:
        tcm = e.get("tool_call_metadata")
        if e.get("action") in ("message", "system"):
            messages += 1
            last_response = object()
        elif "action" in e and tcm:
            calls += 1
            action_ids.add(e["id"])
            rid = tcm["model_response"]["id"]
            messages += rid != last_response
            last_response = rid
        elif "observation" in e and (tcm or e.get("cause") in action_ids):
            messages += 1
            results += 1
            last_response = object()
    return 1, messages, calls, results


def _count_inspect(path):
    samples = json.loads(path.read_text())["samples"]
    return (len(samples), sum(len(s["messages"]) for s in samples),
            sum(len(m.get("tool_calls") or []) for s in samples for m in s["messages"]),
            sum(m["role"] == "tool" for s in samples for m in s["messages"]))


def _count_langsmith(path):
    d = json.loads(path.read_text())
    traces = {r["trace_id"] for r in d["post"]}
    return len(traces), sum(len(r["inputs"]["messages"]) + 1 for r in d["post"] if r["run_type"] == "llm"), 0, 0


def _count_aider(path):
    sessions = re.split(r"^# aider chat started at .*$", path.read_text(), flags=re.MULTILINE)[1:]
    n_sessions = n_messages = 0
    for body in sessions:
        runs, kind, text = [], None, ""
        for line in body.splitlines() + [">"]:
            aider = line == ">" or line.startswith("> ")  # not `>>>>>>> REPLACE`: that is the model's
            k = "user" if line.startswith("####") else "aider" if aider else "model"
            if k != kind:
                if kind in ("user", "model") and text.strip():
                    runs.append(kind)
                kind, text = k, ""
            text += line[4:] if k == "user" else line
        n_sessions += bool(runs)
        n_messages += len(runs)
    return n_sessions, n_messages, 0, 0


def _count_mini_swe(path):
    msgs = json.loads(path.read_text())
    actions = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and "```mswea_bash_command" in m["content"]]
    results = sum(i + 1 < len(msgs) and msgs[i + 1]["role"] == "user" for i in actions)
    return 1, len(msgs), len(actions), results


def _count_managed(path):
    events = [x[1] for x in _lines(path) if x[0].endswith("events.stream")]
    kinds = [e["type"] for e in events]
    calls, results = kinds.count("agent.tool_use"), kinds.count("agent.tool_result")
    return 1, kinds.count("user.message") + kinds.count("agent.message") + calls + results, calls, results


COUNTERS = {
    "claude_code": (_count_claude_code, "claude_code"), "codex": (_count_codex, "codex"),
    "gemini_cli": (_count_gemini, "gemini_cli"), "openhands": (_count_openhands, "openhands"),
    "inspect_ai": (_count_inspect, "inspect_ai"), "langsmith": (_count_langsmith, "langsmith"),
    "aider": (_count_aider, "aider"), "mini_swe_agent": (_count_mini_swe, "mini_swe_agent"),
    "claude_managed_agents": (_count_managed, "claude_managed_agents"),
}
FILES = sorted(p for p in FIX.rglob("*") if p.is_file() and p.parent != FIX
               and not p.name.startswith(("LICENSE", "SOURCE"))) if FIX.exists() else []


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_fixture_imports_through_the_cli_with_independent_counts(path, tmp_path):
    counter, fmt = COUNTERS[path.parent.name]
    out = CliRunner().invoke(app, ["import", str(path), "--workspace", "w", "--create", "--json",
                                   "--home", str(tmp_path)])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and report["skipped"] == []
    assert [f["format"] for f in report["files"]] == [fmt]
    trajs = [line.record for line in read_landed(Workspace("w", tmp_path).landing, "trajectory")]
    msgs = [m for t in trajs for m in t["messages"]]
    got = (len(trajs), len(msgs), sum(len(m.get("tool_calls") or []) for m in msgs),
           sum(m["role"] == "tool" for m in msgs))
    assert got == counter(path)
    for t in trajs:  # every result answers a call of its own trajectory
        ids = {c["id"] for m in t["messages"] for c in m.get("tool_calls") or []}
        assert all(m.get("tool_call_id") in ids for m in t["messages"] if m["role"] == "tool")
    text = orjson.dumps([[m.get("content"), m.get("meta")] for m in msgs]).decode()
    assert "base64," not in text and "iVBORw0KGgo" not in text, "images must become placeholders"


def test_session_metadata_and_images():
    cc = import_file(FIX / "claude_code/full-session-five.jsonl").trajectories[0]
    assert cc.trajectory_id == "claude_code:10cd5911-8704-4996-9e33-32010589c357"
    assert cc.metadata["cli_version"] == "2.0.28" and cc.metadata["git_branch"] == "feat/agent-cli-sdk-revamp-v2"
    assert cc.model == "claude-sonnet-4-5-20250929" and cc.metadata["cwd"].startswith("/Users/jnarowski")
    assert cc.metadata["import_notes"]["summaries_of_other_sessions"] == 16 and "summaries" not in cc.metadata
    raw = [r for r in _lines(FIX / "claude_code/full-session-five.jsonl") if r.get("type") == "assistant"]
    last = {r["message"]["id"]: r["message"]["usage"]["output_tokens"] for r in raw}
    assert cc.metadata["usage"]["output_tokens"] == sum(last.values())  # once per message, not per record
    codex = import_file(next((FIX / "codex").glob("rollout-*.jsonl"))).trajectories[0]
    assert codex.metadata["git_commit"] == "9d356847d46ece3a0bbd3bd64eef89afc78dae74"
    assert codex.model == "gpt-5-codex" and codex.metadata["cli_version"] == "0.40.0"
    image = next(m for m in codex.messages if m.meta and any(
        p.get("type") == "image" for p in getattr(m.meta, "parts", None) or []))
    assert "[image: image/png" in image.content
    shell = next(m for m in codex.messages if m.tool_calls)
    assert json.loads(shell.tool_calls[0].arguments)["command"][0] == "bash"  # JSON-in-JSON decoded once
    assert any(m.reasoning for m in codex.messages if m.role == "assistant")
    assert codex.metadata["usage"]["total_tokens"] > 0
    hand = import_file(FIX / "openhands/basic_interactions.json").trajectories[0]
    assert hand.metadata["final_answer"] == "All done! What's next on the agenda?"
    inspect = import_file(FIX / "inspect_ai/2025-05-12T20-27-36-04-00_browser.json")
    assert [(o.name, o.label, o.value) for o in inspect.outcomes] == [("includes", "C", 1.0)]


def test_regrown_claude_code_session_replaces_its_trajectory(tmp_path):
    src = FIX / "claude_code/full-session-five.jsonl"
    lines = src.read_text().splitlines(keepends=True)
    session = tmp_path / "in" / src.name
    session.parent.mkdir()
    session.write_text("".join(lines[:24]))  # cut mid-turn: two WebSearch calls without results
    ws = Workspace.create("cc", home=tmp_path)
    first = import_paths([session], ws, progress=False)
    partial = import_file(session).trajectories[0]
    assert partial.metadata["unanswered_tool_calls"] and first.trajectories == 1
    shutil.copy(src, session)  # the session grew
    import_paths([session], ws, progress=False)
    day = partial.day
    df, stats = ingest_trajectories(ws, day)
    ws.close()
    assert df.height == 1 and stats.duplicates == 1
    row = df.row(0, named=True)
    assert row["trajectory_id"] == partial.trajectory_id
    assert row["n_messages"] == len(orjson.loads(row["messages_json"])) == _count_claude_code(src)[1]
    assert row["n_tool_calls"] == _count_claude_code(src)[2]


def test_inline_sidechain_becomes_a_linked_trajectory(tmp_path):
    def rec(uuid, parent, kind, content, side=False, mid=None):
        msg = {"role": kind, "content": content, **({"id": mid, "model": "m"} if mid else {})}
        return {"type": kind, "uuid": uuid, "parentUuid": parent, "isSidechain": side, "sessionId": "s1",
                "timestamp": "2025-07-01T10:00:00Z", "message": msg}

    task = [{"type": "tool_use", "id": "t1", "name": "Task", "input": {"prompt": "find the bug"}}]
    records = [rec("u1", None, "user", "fix it"), rec("a1", "u1", "assistant", task, mid="m1"),
               rec("s1", None, "user", "find the bug", side=True),
               rec("s2", "s1", "assistant", [{"type": "text", "text": "found"}], side=True, mid="m2")]
    path = tmp_path / "s1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    main, side = import_file(path).trajectories
    assert main.trajectory_id == "claude_code:s1" and main.metadata["unanswered_tool_calls"] == ["t1"]
    assert side.metadata["parent_trajectory_id"] == main.trajectory_id
    assert side.metadata["parent_tool_call_id"] == "t1" and [m.role for m in side.messages] == ["user", "assistant"]


def test_agents_sdk_input_list_is_responses_items_not_chat(tmp_path):
    items = [{"role": "user", "content": "Weather in Paris?"},
             {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
             {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]}]
    path = tmp_path / "input_list.json"
    path.write_text(json.dumps(items))
    assert detect_format(path) == "openai_agents_input"
    r = import_file(path)
    assert r.errors == [] and [m.role for m in r.trajectories[0].messages] == ["user", "assistant", "tool", "assistant"]
    assert r.trajectories[0].messages[2].tool_call_id == r.trajectories[0].messages[1].tool_calls[0].id


def test_formats_lists_every_coding_agent_format():
    out = CliRunner().invoke(app, ["formats"])
    lines = out.stdout.splitlines()
    for name in ("claude_code", "codex", "gemini_cli", "openhands", "inspect_ai", "langsmith", "aider",
                 "mini_swe_agent", "claude_managed_agents", "openai_agents_input"):
        assert sum(line.startswith(f"{name} ") for line in lines) == 1, name
