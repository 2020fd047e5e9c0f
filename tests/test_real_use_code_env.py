"""Issue 14 items 4/6 (part): the example code environment runs model-written code in a subprocess with CPU,
memory and network limits, and online eval scores scripted agents of mixed skill by hidden tests."""

from __future__ import annotations

import json

from examples.code.environment import _NET, run_limited
from pipeline.evaluate.online import online_eval

ENV = "examples.code.environment:make_env"
SOLUTIONS = {"code-add": "def add(a, b):\n    return a + b", "code-square": "def square(x):\n    return x * x",
             "code-rev": "def rev(s):\n    return s[::-1]", "code-evens": "def evens(xs):\n    return [x for x in xs if x % 2 == 0]"}


def test_limits_hold():
    assert run_limited("print(1 + 1)") == ("2\n", False)
    out, failed = run_limited("while True: pass", cpu_s=1)
    assert failed
    out, failed = run_limited("x = bytearray(400 << 20)", memory_mb=128)
    assert failed and "MemoryError" in out
    if _NET:  # no network namespace without unprivileged user namespaces: documented in examples/code
        out, failed = run_limited("import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)")
        assert failed and "Network is unreachable" in out


def _agent(skill: str):
    def factory(task):
        def act(messages):
            if messages[-1]["role"] == "user":
                code = SOLUTIONS[task.task_id] if skill == "good" else "def nope(): pass"
                return {"tool_calls": [{"name": "run_python", "arguments": json.dumps({"code": code})}]}
            return {"content": f"```python\n{SOLUTIONS[task.task_id] if skill == 'good' else 'x = 1'}\n```"}
        return act
    return factory


def test_online_eval_in_the_code_environment():
    good = online_eval(None, seed=0, n_tasks=4, max_steps=3, policy_factory=_agent("good"), environment=ENV,
                       rewards=["tracemill.rewards:valid_tool_call"])
    bad = online_eval(None, seed=0, n_tasks=4, max_steps=3, policy_factory=_agent("bad"), environment=ENV)
    assert good["success_rate"] == 1.0 and good["reward/valid_tool_call"] == 1.0 and good["errors"] == 0
    assert bad["success_rate"] == 0.0 and bad["mean_reward"] == 0.0
