"""The rollout loop of the demo world: a policy acts against the real tools until it answers.

Used by the scripted agents (to produce traffic) and by online evaluation (through the environment
seam, `pipeline.demo.environment`), so both see exactly the same world.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.demo.scoring import grade
from pipeline.demo.world import SYSTEM_PROMPT, Task, call_tool
from pipeline.environment import Policy


def _assistant(reply: dict[str, Any] | str, calls_so_far: int) -> dict[str, Any]:
    """Normalise a policy's reply: plain text, flat tool calls or OpenAI-style `function` calls."""
    if not isinstance(reply, dict):
        reply = {"content": str(reply or "")}
    calls = []
    for k, call in enumerate(reply.get("tool_calls") or [], start=calls_so_far + 1):
        fn = call.get("function") or call
        args = fn.get("arguments", "{}")
        calls.append({"id": call.get("id") or f"call_{k}", "name": fn.get("name") or "?",
                      "arguments": args if isinstance(args, str) else orjson.dumps(args).decode()})
    return {"role": "assistant", "content": reply.get("content"), "tool_calls": calls}


def rollout(policy: Policy, task: Task, *, max_steps: int = 8) -> tuple[list[dict[str, Any]], str, float]:
    """Run a policy (messages so far → next assistant message) against the real tools until it answers
    without tool calls or `max_steps` assistant turns pass (then the answer is empty, reward 0).
    Messages come back in tracemill's schema shape, ready for `Message.model_validate`."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT},
                                      {"role": "user", "content": task.question}]
    calls = 0
    for _ in range(max_steps):
        msg = _assistant(policy(messages), calls)
        messages.append(msg)
        if not msg["tool_calls"]:
            final = msg["content"] or ""
            return messages, final, grade(task, final)
        for call in msg["tool_calls"]:
            calls += 1
            content, is_error = call_tool(task, call["name"], call["arguments"])
            messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["name"],
                             "content": content, "is_error": is_error})
    return messages, "", 0.0
