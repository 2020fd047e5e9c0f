"""Outcomes for coding-agent sessions, read from what the session itself contains. Heuristics.

A Claude Code or Codex session carries no reward, but it often says how it went: the agent ran the
tests, a command failed, the person rejected a tool call. These graders turn those signs into
outcomes, for `tracemill grade --fn pipeline.lake.coding_graders:<name>` (signature: see
`pipeline.lake.grading`; each gets the lake row plus parsed `messages`, and returns None to abstain,
which adds no outcome):

    tracemill grade claude-live --fn pipeline.lake.coding_graders:tests_passed
    tracemill snapshot claude-live --filter 'tests_passed = 1' --to deeplake://org/coding-sft

They are heuristics, not ground truth, and say so in their docstrings: a test command is recognised
by its text (pytest, npm/yarn/pnpm test, cargo test, go test), its status comes from the exit code
the agent recorded (Codex's `exit_code` in the tool message's meta, an `Exit code N` line in the
output) or, failing that, from the tool result's error flag (Claude Code sets it on a non-zero exit).
A session whose tests pass may still have solved the wrong problem.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

TEST_COMMAND = re.compile(
    r"(?<![\w-])(?:pytest|py\.test|python3? -m pytest|(?:npm|yarn|pnpm|bun)(?: run)? test|cargo (?:test|nextest)"
    r"|go test)(?![\w-])")
EXIT_CODE = re.compile(r"^(?:Error: )?Exit code:? (-?\d+)\b", re.MULTILINE)
REJECTED = ("The user doesn't want to proceed with this tool use", "User rejected tool use",
            "rejected by user", "The user rejected")
SHELL_KEYS = ("command", "cmd", "script")


def _command(arguments: str | None) -> str:
    """The shell command of a tool call: Claude Code's Bash `{command}`, Codex's `shell`
    `{command: ["bash", "-lc", "…"]}` or `exec_command {cmd}`; empty for other tools."""
    try:
        args = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments or ""
    if not isinstance(args, dict):
        return ""
    value = next((args[k] for k in SHELL_KEYS if k in args), "")
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _results(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(m.get("tool_call_id")): m for m in messages if m.get("role") == "tool"}


def exit_status(result: dict[str, Any]) -> int | None:
    """The exit status a tool result reports: a recorded `exit_code`, an `Exit code N` line, else 1
    when the result is flagged as an error and 0 when it is not. None when the text says nothing and
    there is no flag to read (a result that never came)."""
    meta = result.get("meta") or {}
    if isinstance(meta.get("exit_code"), int):
        return meta["exit_code"]
    m = EXIT_CODE.search(result.get("content") or "")
    if m:
        return int(m.group(1))
    return 1 if result.get("is_error") else 0


def tests_passed(traj: dict[str, Any]) -> tuple[float, str] | None:
    """1.0 when the LAST test command of the session exited 0, 0.0 when it failed; abstains when the
    session ran no tests or the last test run got no result (the session was cut off). Heuristic."""
    messages = traj["messages"]
    results = _results(messages)
    runs = [(c, cmd) for m in messages for c in m.get("tool_calls") or []
            if TEST_COMMAND.search(cmd := _command(c.get("arguments")))]
    if not runs:
        return None
    call, cmd = runs[-1]
    result = results.get(str(call.get("id")))
    if result is None:
        return None
    code = exit_status(result)
    return (1.0 if code == 0 else 0.0), f"exit {code}: {cmd[:80]}"


def ended_in_error(traj: dict[str, Any]) -> tuple[float, str]:
    """1.0 when the session ended badly: its last message is a failed tool result, a tool call was
    left unanswered (the agent was stopped mid-turn), or the last assistant turn is an API error or
    stopped on a length/error finish reason; else 0.0. Heuristic."""
    messages = traj["messages"]
    if not messages:
        return 0.0, "empty"
    last = messages[-1]
    if last.get("role") == "tool" and last.get("is_error"):
        return 1.0, "last tool call failed"
    if _results(messages).keys() < {str(c.get("id")) for m in messages for c in m.get("tool_calls") or []}:
        return 1.0, "unanswered tool call"
    final = next((m for m in reversed(messages) if m.get("role") == "assistant"), None)
    if final is not None:
        reason = str((final.get("meta") or {}).get("finish_reason") or "")
        if (final.get("content") or "").startswith("API Error") or reason in ("error", "max_tokens", "length"):
            return 1.0, f"assistant stopped: {reason or 'API error'}"
    return 0.0, "ok"


def rejected_tool_calls(traj: dict[str, Any]) -> float:
    """How many tool calls the person rejected (Claude Code's permission prompt answered no, Codex's
    'rejected by user'), read from the tool results' text. Heuristic: it matches the CLIs' wording."""
    count = 0
    for m in traj["messages"]:
        if m.get("role") != "tool":
            continue
        extra = (m.get("meta") or {}).get("tool_use_result")
        text = f"{m.get('content') or ''} {extra if isinstance(extra, str) else ''}"
        count += any(marker in text for marker in REJECTED)
    return float(count)


def token_cost(traj: dict[str, Any]) -> float | None:
    """Tokens the session used: input + output, plus cache writes and reads where the agent reports
    them (Claude Code's `cache_*_input_tokens`). Abstains when the session reports no usage."""
    total, seen = 0, False
    for m in traj["messages"]:
        meta = m.get("meta") or {}
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            if isinstance(meta.get(key), int):
                total += meta[key]
                seen = True
    if not seen:
        usage = orjson.loads(traj.get("metadata_json") or "{}").get("usage") or {}
        total = int(usage.get("total_tokens") or 0) or sum(
            int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens"))
        seen = bool(total)
    return float(total) if seen else None
