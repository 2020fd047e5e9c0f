"""The seam between the pipeline and the world agents act in: what online evaluation and GRPO need
from an environment, and how a corpus spec names one (`environment: "package.module:factory"`).

Why a protocol and a string: evaluation and training must not import a particular world by name (the
demo world is one environment among the ones users will bring), and a spec in tracemill.yaml can only
hold text. `load_environment` imports the module and calls the factory; the result only has to have
the attributes below. Deliberately small: tasks, tool definitions, a rollout loop and GRPO rewards,
which is what the pipeline uses today.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

DEFAULT_ENVIRONMENT = "pipeline.demo.environment:make_env"

Message = dict[str, Any]
# A policy maps the conversation so far to the next assistant message (or plain text).
Policy = Callable[[list[Message]], "Message | str"]
# A TRL reward function: f(prompts=…, completions=…, completion_ids=…, **dataset columns) -> one value each.
RewardFunction = Callable[..., list[Any]]


class EnvTask(Protocol):
    """One task of an environment: a stable id (pairs attempts, seeds trajectory ids) and a JSON-able
    description (kept in the captured trajectory's metadata, and RL ground truth)."""

    @property
    def task_id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Environment(Protocol):
    """A world a policy acts in, with a verifiable reward."""

    name: str
    tools: list[dict[str, Any]]  # tool definitions (JSON schema) a policy may be shown

    def eval_tasks(self, seed: int, n: int) -> Sequence[Any]:
        """`n` held-out tasks, the same ones for the same seed (so evaluations are pairable)."""
        ...

    def rollout(self, policy: Policy, task: Any, *, max_steps: int) -> tuple[list[Message], str, float]:
        """Run the policy on one task with the real tools: (messages, final answer, reward)."""
        ...

    def reward_functions(self, eos_token_id: int | None) -> list[RewardFunction]:
        """GRPO reward functions scoring one generated assistant turn against a row's `ground_truth`."""
        ...


@lru_cache(maxsize=8)
def load_environment(ref: str = DEFAULT_ENVIRONMENT) -> Environment:
    """`"package.module:factory"` → the environment the factory returns (cached per reference)."""
    module, sep, factory = ref.partition(":")
    if not sep or not module or not factory:
        raise ValueError(f"environment {ref!r} must look like 'package.module:factory'")
    env = getattr(importlib.import_module(module), factory)()
    if not isinstance(env, Environment):
        raise TypeError(f"environment {ref!r} lacks part of the Environment protocol (pipeline.environment)")
    return env
