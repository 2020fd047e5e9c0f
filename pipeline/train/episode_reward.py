"""GRPO rewards from multi-step episodes: each generated first turn is continued in the environment.

Why here and not TRL's `environment_factory`/`tools`: TRL 1.16 runs tool calls during generation only for
chat templates it can parse responses of (its known templates, transformers ≥ 5.2) and only with
conversational prompts; tracemill renders its own prompts as text. So the trainer samples the first
assistant turn (the tokens that get the gradient), and this reward function plays the rest of the episode:
the environment executes that turn's tool calls (`step`), the current policy continues greedily with its
weights of this step, and the environment's `reward` scores the finished trajectory. A first turn that
leads to a right answer two tool calls later is rewarded, not only the shape of the first call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.chat import parse_assistant_output
from pipeline.chat.generate import greedy_turns
from pipeline.environment import (
    Environment,
    EnvironmentCallError,
    Message,
    call_with_timeout,
    normalize_assistant,
    run_episodes,
)


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion or [] if isinstance(m, dict))


class GreedyPolicy:
    """The model being trained, generating assistant turns greedily (no gradient) in its own chat template;
    `batch` answers every open episode of a reward call in one `generate` (`run_episodes`)."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, tools: list[dict[str, Any]] | None):
        self.model, self.tokenizer, self.max_new_tokens, self.tools = model, tokenizer, max_new_tokens, tools

    def batch(self, indices: Sequence[int], conversations: Sequence[list[Message]]) -> list[Message]:
        was_training = self.model.training
        self.model.eval()
        try:
            turns = greedy_turns(self.model, self.tokenizer, conversations, self.tools, self.max_new_tokens)
            return [t.message for t in turns]
        finally:
            self.model.train(was_training)

    def __call__(self, messages: list[Message]) -> Message:
        return self.batch([0], [messages])[0]


class EpisodeReward:
    """A TRL reward function (`f(prompts, completions, ground_truth, **columns)`) whose value is the
    environment's reward for the episode that each completion starts. `ground_truth` is the task's
    `to_dict()` (how RL rows carry it); a row the environment cannot load scores None. Failures in the
    environment's code score 0 and are counted in `errors` (and logged as `episode/errors`)."""

    __name__ = "episode_reward"

    def __init__(self, make_env: Callable[[], Environment], *, max_steps: int, max_new_tokens: int,
                 timeout_s: float, tools_in_prompt: bool = False):
        self.make_env, self.max_steps, self.max_new_tokens = make_env, max_steps, max_new_tokens
        self.timeout_s, self.tools_in_prompt = timeout_s, tools_in_prompt
        self.policy: Callable[[list[Message]], Any] | None = None  # a GreedyPolicy once bound
        self.errors: list[str] = []
        self.episodes: list[dict[str, Any]] = []  # steps and reward per scored completion (tests, debugging)

    def bind(self, model: Any, tokenizer: Any) -> None:
        """Continue episodes with this model (the trainer's, once it is built)."""
        tools = self.make_env().tools if self.tools_in_prompt else None
        self.policy = GreedyPolicy(model, tokenizer, self.max_new_tokens, tools)

    def _opening(self, env: Environment, completion: Any, truth: Any) -> tuple[Any, list[Message]] | None:
        """The task and the episode so far (its opening plus the sampled first turn); None when the row is
        not a task of this environment."""
        try:
            data = json.loads(truth) if isinstance(truth, str) else truth
            task = call_with_timeout(f"{env.name}.load_task", env.load_task, data, timeout_s=self.timeout_s)
            opening = call_with_timeout(f"{env.name}.reset", env.reset, task, timeout_s=self.timeout_s)
        except (EnvironmentCallError, ValueError):
            return None
        return task, [*opening, normalize_assistant(parse_assistant_output(_text(completion)), 0)]

    def __call__(self, completions: Sequence[Any], ground_truth: Sequence[Any], **kwargs: Any) -> list[float | None]:
        """Every completion's episode, continued together: one batched `generate` per round of turns."""
        before = len(self.errors)
        envs = [self.make_env() for _ in completions]
        starts = [self._opening(env, c, t) for env, c, t in zip(envs, completions, ground_truth, strict=True)]
        live = [i for i, s in enumerate(starts) if s is not None]
        one = self.policy or (lambda messages: {"content": ""})  # unbound: the first turn alone is the episode
        policy = getattr(one, "batch", None) or (lambda indices, conversations: [one(c) for c in conversations])
        episodes = run_episodes([envs[i] for i in live], policy, [starts[i][0] for i in live],  # type: ignore[index]
                                max_steps=self.max_steps, timeout_s=self.timeout_s,
                                openings=[starts[i][1] for i in live])  # type: ignore[index]
        rewards: list[float | None] = [None] * len(completions)
        for i, episode in zip(live, episodes, strict=True):
            if episode.error:
                self.errors.append(episode.error)
            self.episodes.append({"steps": sum(m["role"] == "assistant" for m in episode.messages),
                                  "reward": episode.reward, "error": episode.error})
            rewards[i] = episode.reward
        if callable(log := kwargs.get("log_metric")):
            log("episode/errors", float(len(self.errors) - before))
        return rewards
