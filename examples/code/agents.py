"""Scripted coding agents of mixed skill, and `populate` (the demo entry point's `--populate` hook).

- `careful`: writes the right function, runs it once on an example, answers with the code: all tests pass.
- `sloppy`: right idea, an off-by-one slip half the time (`x * x` → `x * x + 1`): some tests fail.
- `broken`: answers with code that does not even define the function.
The correct solutions live here, keyed by task id (the environment only knows the hidden tests).
"""

from __future__ import annotations

import json
from random import Random
from typing import Any

from examples.code.environment import CodeTask, make_env
from examples.scripted import Agent, PopulateStats, populate_with
from pipeline.capture.workspace import Workspace

BODIES = {"add": ("a, b", "a + b"), "square": ("x", "x * x"), "rev": ("s", "s[::-1]"),
          "evens": ("xs", "[x for x in xs if x % 2 == 0]"), "double": ("x", "2 * x"), "neg": ("x", "-x"),
          "first": ("xs", "xs[0]"), "last": ("xs", "xs[-1]"), "upper": ("s", "s.upper()"),
          "total": ("xs", "sum(xs)"), "odds": ("xs", "[x for x in xs if x % 2 == 1]"), "maxi": ("xs", "max(xs)")}


def solution(task: CodeTask, slip: bool = False) -> str:
    name = task.task_id.removeprefix("code-")
    args, body = BODIES[name]
    return f"def {name}({args}):\n    return {body}{' + 1' if slip and body[0] != '[' else ''}"


def _coder(code_for):
    def agent(task: CodeTask, rng: Random):
        code = code_for(task, rng)
        example = task.tests[0][0]

        def act(messages: list[dict[str, Any]]) -> dict[str, Any]:
            if messages[-1]["role"] == "user":
                run = json.dumps({"code": f"{code}\nprint({example})"})
                return {"content": None, "tool_calls": [{"name": "run_python", "arguments": run}]}
            return {"content": f"```python\n{code}\n```"}
        return act
    return agent


careful = _coder(lambda task, rng: solution(task))
sloppy = _coder(lambda task, rng: solution(task, slip=rng.random() < 0.5))
broken = _coder(lambda task, rng: "def solve():\n    pass")
AGENTS = [Agent("careful", "code-large", careful), Agent("sloppy", "code-mini", sloppy),
          Agent("broken", "code-nano", broken)]


def populate(ws: Workspace, *, days: list[str], per_day: int, seed: int = 0) -> PopulateStats:
    """Scripted agents attempt the practice tasks (never the held-out ones)."""
    return populate_with(ws, make_env, make_env().train_tasks(), AGENTS, days=days, per_day=per_day, seed=seed)
