"""Verifiable rewards for RL in the demo world, as TRL GRPO reward functions.

TRL 1.16 calls every reward function as `f(prompts=..., completions=..., completion_ids=..., **columns)`,
where `columns` are the dataset's other columns (here `ground_truth`, `task_id`, `tools`), each repeated per
generation, plus `trainer_state`, `log_extra` and `log_metric`. With text prompts a completion is the decoded
text *with special tokens skipped* (so `<|end|>` is gone; `<tool_call>` markup survives because it is not a
special token); with conversational prompts it is `[{"role": "assistant", "content": text}]`. A function
returns one float per completion, or None where it does not apply (TRL ignores it in the sum then).

Rewards score one generated assistant turn (the next action). `ground_truth` is JSON: the demo task dict
(with `answer`) or a bare final answer ("6.49 EUR" or 6.49); tool-call scoring needs the task dict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from pipeline.chat import count_tool_calls, parse_assistant_output
from pipeline.chat.families import ALL_END_MARKERS
from pipeline.demo.scoring import grade, numbers_in, score_tool_call
from pipeline.demo.world import Task


@lru_cache(maxsize=4096)
def parse_ground_truth(value: str) -> tuple[Task | None, float | None]:
    """(task, expected answer) from a ground-truth JSON string; the task is None for a bare answer. Cached:
    TRL repeats the same string once per generation."""
    try:
        data: Any = json.loads(value)
    except (TypeError, ValueError):
        data = value
    if isinstance(data, dict):
        try:
            task = Task.from_dict(data)
            return task, task.answer
        except (KeyError, TypeError):
            data = data.get("answer", data.get("final_answer"))
    found = numbers_in(data) if isinstance(data, str) else [float(data)] if isinstance(data, int | float) else []
    return None, found[-1] if found else None


def _gt(value: Any) -> tuple[Task | None, float | None]:
    return parse_ground_truth(value if isinstance(value, str) else json.dumps(value))


def completion_text(completion: Any) -> str:
    """The generated text of a standard (str) or conversational (list of messages) completion."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion or [] if isinstance(m, dict))


def _prior_calls(prompt: Any) -> int:
    """How many tool calls the prompt already holds: the index of the call the completion makes next."""
    if isinstance(prompt, str):
        return count_tool_calls(prompt)
    return sum(len(m.get("tool_calls") or []) for m in prompt or [] if isinstance(m, dict))


def final_answer_reward(completions: Sequence[Any], ground_truth: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the turn is a final answer (no tool call) whose *last* number is right (strict grading, so
    listing candidates does not pay), else 0.0."""
    rewards = []
    for completion, truth in zip(completions, ground_truth, strict=True):
        msg = parse_assistant_output(completion_text(completion))
        task, expected = _gt(truth)
        if msg["tool_calls"] or msg["invalid_tool_calls"] or not msg["content"] or expected is None:
            rewards.append(0.0)
        elif task is not None:
            rewards.append(grade(task, msg["content"], strict=True))
        else:  # a bare answer: same rule as `grade(strict=True)`, without a task around it
            last = numbers_in(msg["content"])[-1:]
            rewards.append(1.0 if last and abs(last[0] - expected) <= 0.01 + 1e-9 else 0.0)
    return rewards


def tool_call_reward(completions: Sequence[Any], ground_truth: Sequence[Any], prompts: Sequence[Any] | None = None,
                     **kwargs: Any) -> list[float | None]:
    """The turn's first tool call scored by `pipeline.demo.scoring.score_tool_call` (1 right tool and arguments, 0.5 right
    tool, 0 otherwise) at the step the prompt has reached (0 for a system+user prompt). A turn without a call
    scores 0; None where the ground truth is a bare answer (no task to check the call against)."""
    rewards: list[float | None] = []
    prompts = prompts if prompts is not None else [None] * len(completions)
    for completion, truth, prompt in zip(completions, ground_truth, prompts, strict=True):
        task, _ = _gt(truth)
        if task is None:
            rewards.append(None)
            continue
        calls = parse_assistant_output(completion_text(completion))["tool_calls"]
        rewards.append(score_tool_call(task, _prior_calls(prompt), calls[0]["name"], calls[0]["arguments"])
                       if calls else 0.0)
    return rewards


def format_reward(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                  eos_token_id: int | None = None, **kwargs: Any) -> list[float]:
    """1.0 for a well-formed, finished turn; 0.5 well-formed but cut off by the length limit; 0.0 for
    malformed tool-call JSON or an empty turn. "Finished" is an end marker (`<|end|>`, `<|im_end|>` …) in the text or, since TRL decodes with
    special tokens skipped, the last generated id being `eos_token_id` (bind it with functools.partial)."""
    rewards = []
    ids_list = completion_ids if completion_ids is not None else [None] * len(completions)
    for completion, ids in zip(completions, ids_list, strict=True):
        text = completion_text(completion)
        msg = parse_assistant_output(text)
        if msg["invalid_tool_calls"] or not (msg["content"] or msg["tool_calls"]):
            rewards.append(0.0)
            continue
        ended = any(e in text for e in ALL_END_MARKERS) or bool(ids is not None and len(ids) and eos_token_id is not None
                                    and ids[-1] == eos_token_id)
        rewards.append(1.0 if ended else 0.5)
    return rewards


DEFAULT_REWARDS = (final_answer_reward, tool_call_reward, format_reward)
