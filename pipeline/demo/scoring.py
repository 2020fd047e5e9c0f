"""Grading in the demo world: is a final answer right, and how good is one tool call.

Why apart from the world: the scripted agents, the rollout loop, online evaluation and the GRPO reward
functions all grade; the world itself (items, tools, tasks) does not need to know how.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.demo.world import Task, ToolError, calculate, check_args

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def numbers_in(text: str | None) -> list[float]:
    """Every number in a text, in order; thousands separators are understood (`1,065.42`)."""
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text or "")]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 + 1e-9  # the epsilon keeps 6.50 vs 6.49 as close as 6.48 vs 6.49


def grade(task: Task, final_answer: str | None, *, strict: bool = False) -> float:
    """1.0 when the answer contains the right number (within 0.01), else 0.0. `strict` looks at the
    last number only, which an RL policy cannot game by listing many candidate numbers."""
    found = numbers_in(final_answer)[-1:] if strict else numbers_in(final_answer)
    return 1.0 if any(_close(x, task.answer) for x in found) else 0.0


def score_tool_call(task: Task, step_index: int, name: str, arguments: Any) -> float:
    """Step-level reward for the `step_index`-th tool call (0-based): 1.0 for the expected tool with
    the right arguments, 0.5 for the expected tool with wrong or invalid ones, 0.0 otherwise.
    Arithmetic is judged by value, so `2.35 * 3` scores like `3 * 2.35`."""
    chain = task.expected_chain
    if not 0 <= step_index < len(chain) or name != chain[step_index][0]:
        return 0.0
    try:
        args = check_args(name, arguments)
        if name == "calculator":
            return 1.0 if _close(float(calculate(args["expression"])), task.total_usd) else 0.5
    except ToolError:
        return 0.5
    for key, want in chain[step_index][1].items():
        got = args[key]
        same = _close(got, want) if isinstance(want, float) else got.strip().lower() == want.lower()
        if not same:
            return 0.5
    return 1.0
