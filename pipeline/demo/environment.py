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
    unseen_item_share: float = 0.0  # share of held-out tasks about items no training trajectory names

    def eval_tasks(self, seed: int, n: int) -> Sequence[Task]:
        return eval_tasks(seed, n, self.unseen_item_share)

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


def make_env(unseen_item_share: float = 0.0) -> DemoEnvironment:
    """`environment_config: {unseen_item_share: 0.5}` makes half the held-out tasks ask about
    `UNSEEN_ITEMS` (the real-model lane's traffic never names them: `agents.populate_seen_items`)."""
    if not 0.0 <= unseen_item_share <= 1.0:
        raise ValueError(f"environment_config.unseen_item_share must be between 0 and 1, got {unseen_item_share}")
    return DemoEnvironment(unseen_item_share=float(unseen_item_share))
