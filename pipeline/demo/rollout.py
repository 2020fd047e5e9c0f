"""The rollout loop of the demo world: a policy acts against the real tools until it answers.

Used by the scripted agents (to produce traffic); online evaluation runs the same loop
(`pipeline.environment.run_episode`) on the same environment, so both see exactly the same world.
"""

from __future__ import annotations

from typing import Any

from pipeline.demo.environment import DemoEnvironment
from pipeline.demo.world import Task
from pipeline.environment import Policy, run_episode


def rollout(policy: Policy, task: Task, *, max_steps: int = 8) -> tuple[list[dict[str, Any]], str, float]:
    """Run a policy (messages so far → next assistant message) against the real tools until it answers
    without tool calls or `max_steps` assistant turns pass (then the answer is empty, reward 0).
    Messages come back in tracemill's schema shape, ready for `Message.model_validate`."""
    episode = run_episode(DemoEnvironment(), policy, task, max_steps=max_steps)
    if episode.error:  # the demo world's own code failing is a bug, not an observation
        raise RuntimeError(episode.error)
    return episode.messages, episode.final_answer, episode.reward
