"""The demo world behind the pipeline's environment seam (`pipeline.environment`): held-out tasks, its
three tools, the rollout loop and its GRPO rewards. `make_env` is the default `environment:` of a
corpus spec."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.demo.rewards import final_answer_reward, format_reward, tool_call_reward
from pipeline.demo.rollout import rollout
from pipeline.demo.world import TOOLS, Task, eval_tasks
from pipeline.environment import Message, Policy, RewardFunction


@dataclass(frozen=True)
class DemoEnvironment:
    """The priced-items shop of `pipeline.demo.world`."""

    name: str = "demo"
    tools: list[dict[str, Any]] = field(default_factory=lambda: TOOLS)

    def eval_tasks(self, seed: int, n: int) -> Sequence[Task]:
        return eval_tasks(seed, n)

    def rollout(self, policy: Policy, task: Task, *, max_steps: int = 8) -> tuple[list[Message], str, float]:
        return rollout(policy, task, max_steps=max_steps)

    def reward_functions(self, eos_token_id: int | None) -> list[RewardFunction]:
        """Final answer, first tool call and format; `format_reward` gets the EOS id because TRL decodes
        completions without special tokens."""
        return [final_answer_reward, tool_call_reward, functools.partial(format_reward, eos_token_id=eos_token_id)]


def make_env() -> DemoEnvironment:
    return DemoEnvironment()
