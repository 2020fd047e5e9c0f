"""The demo world behind the pipeline's environment seam (`pipeline.environment`): held-out tasks, its
three tools, one episode's state and its reward. The demo config (`tracemill.yaml`) names
`pipeline.demo.environment:make_env`; nothing outside the demo package imports it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.demo.scoring import grade
from pipeline.demo.world import SYSTEM_PROMPT, TOOLS, Task, call_tool, eval_tasks
from pipeline.environment import Message


@dataclass
class DemoEnvironment:
    """The priced-items shop of `pipeline.demo.world`; `reset` remembers the task its tools price."""

    name: str = "demo"
    tools: list[dict[str, Any]] = field(default_factory=lambda: TOOLS)
    task: Task | None = None

    def eval_tasks(self, seed: int, n: int) -> Sequence[Task]:
        return eval_tasks(seed, n)

    def load_task(self, data: dict[str, Any]) -> Task:
        return Task.from_dict(data)

    def reset(self, task: Task) -> list[Message]:
        self.task = task
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.question}]

    def step(self, name: str, arguments: str) -> tuple[str, bool]:
        if self.task is None:
            raise RuntimeError("step before reset")
        return call_tool(self.task, name, arguments)

    def reward(self, task: Task, messages: list[Message]) -> float:
        last = messages[-1] if messages else {}
        return grade(task, last.get("content") if last.get("role") == "assistant" else None)


def make_env() -> DemoEnvironment:
    return DemoEnvironment()
