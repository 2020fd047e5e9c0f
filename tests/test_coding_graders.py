"""Coding-session graders: unit checks on message lists, and the documented end-to-end path
import → ingest → `tracemill grade --fn pipeline.lake.coding_graders:tests_passed` →
`tracemill snapshot --filter 'tests_passed = 1'` on a small synthetic Claude Code tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.capture.workspace import Workspace
from pipeline.lake import coding_graders as g
from pipeline.lake.ingest import ingest_trajectories
from tests.coding_sessions import DAY, claude_assistant, claude_user, session_ids, write_lines

ROOT = Path(__file__).resolve().parents[1]
REJECTION = ("The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file "
             "edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user.")


def call(cid: str, command: str) -> dict:
    return {"id": cid, "name": "Bash", "arguments": json.dumps({"command": command})}


def traj(*messages: dict, **row) -> dict:
    return {"messages": list(messages), **row}


def test_tests_passed_reads_the_last_test_run():
    failing = [{"role": "assistant", "tool_calls": [call("a", "cd src && pytest -q")]},
               {"role": "tool", "tool_call_id": "a", "content": "Exit code 1\n1 failed", "is_error": True}]
    fixed = [{"role": "assistant", "tool_calls": [call("b", "ls")]}, {"role": "tool", "tool_call_id": "b", "content": "x"},
             {"role": "assistant", "tool_calls": [call("c", "npm test")]},
             {"role": "tool", "tool_call_id": "c", "content": "ok"}]
    assert g.tests_passed(traj(*failing)) == (0.0, "exit 1: cd src && pytest -q")
    assert g.tests_passed(traj(*failing, *fixed))[0] == 1.0
    codex = [{"role": "assistant", "tool_calls": [{"id": "s", "name": "shell", "arguments": json.dumps(
                 {"command": ["bash", "-lc", "cargo test --all"]})}]},
             {"role": "tool", "tool_call_id": "s", "content": "test result: FAILED", "meta": {"exit_code": 101}}]
    assert g.tests_passed(traj(*codex)) == (0.0, "exit 101: bash -lc cargo test --all")
    newer = [codex[0], {"role": "tool", "tool_call_id": "s", "content": "Exit code: 0\nWall time: 2s\nOutput:\nok"}]
    assert g.tests_passed(traj(*newer))[0] == 1.0
    assert g.tests_passed(traj(*fixed[:2])) is None  # no tests run: abstain
    assert g.tests_passed(traj(failing[0])) is None  # cut off before the result: abstain
    assert g.tests_passed(traj({"role": "assistant", "tool_calls": [call("d", "echo pytestify")]})) is None


def test_ended_in_error_rejections_and_token_cost():
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "done", "meta": {"finish_reason": "end_turn",
          "input_tokens": 100, "output_tokens": 7, "cache_read_input_tokens": 900}}]
    assert g.ended_in_error(traj(*ok)) == (0.0, "ok")
    assert g.ended_in_error(traj(ok[0], {"role": "assistant", "content": "API Error: 529 overloaded"}))[0] == 1.0
    assert g.ended_in_error(traj(ok[0], {"role": "assistant", "tool_calls": [call("x", "ls")]})) == (
        1.0, "unanswered tool call")
    failed = [{"role": "assistant", "tool_calls": [call("y", "make")]},
              {"role": "tool", "tool_call_id": "y", "content": "boom", "is_error": True}]
    assert g.ended_in_error(traj(*failed)) == (1.0, "last tool call failed")
    rejected = {"role": "tool", "tool_call_id": "y", "content": REJECTION, "is_error": True}
    codex_rejected = {"role": "tool", "tool_call_id": "z", "content": "exec command rejected by user"}
    assert g.rejected_tool_calls(traj(*ok, rejected, codex_rejected)) == 2.0
    assert g.rejected_tool_calls(traj(*failed)) == 0.0
    assert g.token_cost(traj(*ok)) == 1007.0
    assert g.token_cost(traj(ok[0], metadata_json=json.dumps({"usage": {"total_tokens": 42}}))) == 42.0
    assert g.token_cost(traj(ok[0])) is None


def _session(root: Path, sid: str, outcomes: list[tuple[str, bool]]) -> None:
    """A Claude Code session: one Bash call per (command, ok) with its result, then a final answer."""
    recs, i = [claude_user(sid, 0, f"please fix bug {sid[:8]}")], 1
    for command, ok in outcomes:
        tid = f"toolu_{sid[:8]}_{i}"
        recs.append(claude_assistant(sid, i, [{"type": "tool_use", "id": tid, "name": "Bash",
                                               "input": {"command": command}}], stop="tool_use"))
        text = "3 passed in 0.1s" if ok else "Exit code 1\n1 failed, 2 passed"
        recs.append({**claude_user(sid, i + 1, [{"type": "tool_result", "tool_use_id": tid, "content": text,
                                                  "is_error": not ok}]),
                     "toolUseResult": {"stdout": text, "stderr": "", "interrupted": False}})
        i += 2
    recs.append(claude_assistant(sid, i, [{"type": "text", "text": f"finished {sid[:8]}"}]))
    write_lines(root / "-work-proj" / f"{sid}.jsonl", recs)


def tm(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"TRACEMILL_HOME": str(home), "PATH": "/usr/bin:/bin", "COLUMNS": "200",
                               "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def test_green_sessions_make_a_corpus_end_to_end(tmp_path):
    projects, home = tmp_path / ".claude" / "projects", tmp_path / "tm"
    green, red, fixed, untested = session_ids(4, "graders")
    _session(projects, green, [("pytest -q", True)])
    _session(projects, red, [("pytest -q", False)])
    _session(projects, fixed, [("pytest -q", False), ("ls", True), ("python -m pytest tests", True)])
    _session(projects, untested, [("ls", True)])
    imported = tm("import", str(projects), "-w", "claude-live", "--create", "--json", home=home)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["trajectories"] == 4
    ws = Workspace("claude-live", home)
    assert ws.days("trajectory") == [DAY]
    ingest_trajectories(ws, DAY)
    graded = tm("grade", "claude-live", "--fn", "pipeline.lake.coding_graders:tests_passed", "--source", "test",
                "--json", home=home)
    assert graded.returncode == 0, graded.stderr
    assert {k: json.loads(graded.stdout)[k] for k in ("graded", "abstained")} == {"graded": 3, "abstained": 1}
    snap = tm("snapshot", "claude-live", "--filter", "tests_passed = 1", "--to", "deeplake://org/coding-sft",
              "--json", home=home)
    assert snap.returncode == 0, snap.stderr
    result = json.loads(snap.stdout)
    assert result["rows"] == 2 and result["curation"]["after_filter"] == 2

    import deeplake

    ds = deeplake.open_read_only(f"file://{home}/corpora/org/coding-sft")
    ids = sorted(ds["trajectory_id"][:])
    assert ids == sorted(f"claude_code:{s}" for s in (green, fixed))
    calls = [sum(len(m.get("tool_calls") or []) for m in json.loads(text)) for text in ds["messages"][:]]
    assert all(n > 0 for n in calls)  # the coding sessions' tool calls are in the corpus rows
