"""A code environment (issue 14 example, not part of the pipeline): the task is a small Python function,
the tool runs code in a limited subprocess, the reward is the share of hidden tests passed.

Limits on model-written code: a fresh `python -I` subprocess with `resource.setrlimit` on CPU seconds and
address space, a wall-clock timeout, and no network (`unshare -rn`, an empty network namespace, where
unprivileged user namespaces are allowed; otherwise the run is marked `network: not isolated`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

RUN = {"type": "function", "function": {"name": "run_python", "description": "Run Python code, return its output.",
       "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"],
                      "additionalProperties": False}}}
TASKS = [
    ("add", "Write `def add(a, b)` returning a + b.", [("add(1, 2)", 3), ("add(-1, 1)", 0)]),
    ("square", "Write `def square(x)` returning x * x.", [("square(3)", 9), ("square(-2)", 4)]),
    ("rev", "Write `def rev(s)` returning the reversed string.", [("rev('ab')", "ba"), ("rev('')", "")]),
    ("evens", "Write `def evens(xs)` returning the even numbers of xs.", [("evens([1, 2, 4])", [2, 4])]),
]
# Practice tasks for the scripted agents (`train_tasks`): the held-out TASKS above never reach a train split.
TRAIN = [
    ("double", "Write `def double(x)` returning 2 * x.", [("double(4)", 8), ("double(0)", 0)]),
    ("neg", "Write `def neg(x)` returning -x.", [("neg(3)", -3), ("neg(-1)", 1)]),
    ("first", "Write `def first(xs)` returning the first item of xs.", [("first([7, 8])", 7)]),
    ("last", "Write `def last(xs)` returning the last item of xs.", [("last([7, 8])", 8)]),
    ("upper", "Write `def upper(s)` returning s in upper case.", [("upper('ab')", "AB")]),
    ("total", "Write `def total(xs)` returning the sum of xs.", [("total([1, 2, 3])", 6), ("total([])", 0)]),
    ("odds", "Write `def odds(xs)` returning the odd numbers of xs.", [("odds([1, 2, 3])", [1, 3])]),
    ("maxi", "Write `def maxi(xs)` returning the largest item of xs.", [("maxi([3, 9, 2])", 9)]),
]
_NET = ["unshare", "-rn"] if shutil.which("unshare") and subprocess.run(
    ["unshare", "-rn", "true"], capture_output=True).returncode == 0 else []


def run_limited(code: str, *, cpu_s: int = 2, memory_mb: int = 256, wall_s: float = 5.0) -> tuple[str, bool]:
    """(output, failed) of `code` in a limited, network-less subprocess."""
    limits = (f"import resource; resource.setrlimit(resource.RLIMIT_CPU, ({cpu_s}, {cpu_s})); "
              f"resource.setrlimit(resource.RLIMIT_AS, ({memory_mb << 20}, {memory_mb << 20}))\n")
    try:
        proc = subprocess.run([*_NET, sys.executable, "-I", "-c", limits + code], capture_output=True, text=True,
                              timeout=wall_s)
    except subprocess.TimeoutExpired:
        return f"error: no result within {wall_s:g} s", True
    out = (proc.stdout + proc.stderr)[-2000:]
    return out or f"(exit {proc.returncode})", proc.returncode != 0


@dataclass(frozen=True)
class CodeTask:
    task_id: str
    prompt: str
    tests: list = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "prompt": self.prompt, "tests": self.tests}


class CodeEnv:
    name = "code"
    tools = [RUN]

    def __init__(self, cpu_s: int = 2, memory_mb: int = 256):
        self.cpu_s, self.memory_mb, self.code = cpu_s, memory_mb, ""

    def eval_tasks(self, seed: int, n: int) -> list[CodeTask]:
        return [CodeTask(f"code-{name}", prompt, [list(t) for t in tests]) for name, prompt, tests in TASKS][:n]

    def train_tasks(self) -> list[CodeTask]:
        """The practice tasks (TRAIN), disjoint from the held-out eval tasks."""
        return [CodeTask(f"code-{name}", prompt, [list(t) for t in tests]) for name, prompt, tests in TRAIN]

    def load_task(self, data: dict[str, Any]) -> CodeTask:
        return CodeTask(data["task_id"], data["prompt"], data["tests"])

    def reset(self, task: CodeTask) -> list[dict[str, Any]]:
        self.code = ""
        return [{"role": "system", "content": "Write the function; test it with run_python; answer with the code."},
                {"role": "user", "content": task.prompt}]

    def step(self, name: str, arguments: str) -> tuple[str, bool]:
        if name != "run_python":
            return f"error: unknown tool {name!r}", True
        self.code = json.loads(arguments)["code"]
        return run_limited(self.code, cpu_s=self.cpu_s, memory_mb=self.memory_mb)

    def reward(self, task: CodeTask, messages: list[dict[str, Any]]) -> float:
        """Share of hidden tests passed by the final answer's code (else the last code run)."""
        code = (messages[-1].get("content") or "") if messages else ""
        code = code.split("```python")[-1].split("```")[0] if "```" in code else code or self.code
        checks = "\n".join(f"print(({call}) == {expected!r})" for call, expected in task.tests)
        out, failed = run_limited(code + "\n" + checks, cpu_s=self.cpu_s, memory_mb=self.memory_mb)
        return 0.0 if failed else out.split().count("True") / len(task.tests)


def make_env(cpu_s: int = 2, memory_mb: int = 256) -> CodeEnv:
    return CodeEnv(cpu_s, memory_mb)
