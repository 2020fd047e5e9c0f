"""Agents that say their plan before they act (the real-model lane's traffic, `agents.populate_seen_items`).

Why: a small pretrained model learns a decision far more easily when the cue sits right before it. Whether
to convert depends on the question's currency; in a plain run that decision falls after the calculator,
~100 tokens from the question. A plan written right after the question names the conversion, and the
later decision only has to follow it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pipeline.demo.world import Task, fmt


def plan_text(task: Task) -> str:
    """What a planning agent says before its first call: the chain it will follow, the conversion named
    right after the question that decides it."""
    steps = f"look up the price of {task.item}, multiply by {fmt(task.quantity)}"
    if task.currency == "USD":
        return f"Plan: {steps}. Prices are in USD, so no conversion."
    return f"Plan: {steps}, then convert USD to {task.currency}."


def planned(script: Generator[dict[str, Any], Any, None], task: Task) -> Generator[dict[str, Any], Any, None]:
    """The same script, saying its plan (`plan_text`) with its first tool call."""
    msg = next(script)
    if msg.get("tool_calls") and not msg.get("content"):
        msg = {**msg, "content": plan_text(task)}
    while True:
        reply = yield msg
        try:
            msg = script.send(reply)
        except StopIteration:
            return
