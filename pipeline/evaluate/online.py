"""Online evaluation: put a checkpoint to work in an environment and score what it *does*.

Offline metrics (`pipeline.evaluate.offline`) replay reference conversations with a teacher-forced prefix;
they cannot see a model drifting off the path, calling a tool wrongly and never recovering. Here the
model acts on held-out tasks (`Environment.eval_tasks`, deterministic per seed) through the shared
episode loop (`pipeline.environment.run_episode`: reset, the policy's tool calls executed by `step`), and
the environment's reward grades it. The environment comes from the corpus spec's `environment:`, so
this module names no world. Rollouts are captured into a workspace only when asked
(`online.capture_to`), tagged as held-out, so a snapshot can filter them and curation keeps them out of
train. Generation is greedy and torch is seeded: same checkpoint and seed, same
numbers. The policy is injectable (`policy_factory`), which lets tests prove the harness on a scripted
agent with a known answer before trusting it on a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipeline import progress
from pipeline.config import TURN_TOKENS
from pipeline.corpus.heldout import record_heldout
from pipeline.corpus.redact import Redactor
from pipeline.environment import (
    DEFAULT_ENVIRONMENT,
    DEFAULT_TIMEOUT_S,
    Environment,
    EnvironmentCallError,
    EnvTask,
    Episode,
    Policy,
    RewardFunction,
    call_with_timeout,
    environment_factory,
    load_environment,
    load_reward,
    run_episode,
    run_episodes,
)
from pipeline.evaluate.policy import ModelPolicy, Turn, model_policy
from pipeline.schema import utcnow

PolicyFactory = Callable[[Any], Policy]


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Aggregate per-task results. Error and invalid rates are pooled over calls/turns (not averaged
    per task), so a task with many calls weighs more; NaN when there is nothing to count. `cut_turn_rate` is
    the share of turns that ran out of `max_new_tokens` (a cut tool call does not parse: raise the budget);
    NaN for a policy that logs no turns (a scripted one)."""
    def ratio(num: str, den: str) -> float:
        total = sum(r[den] for r in results)
        return sum(r[num] for r in results) / total if total else float("nan")

    n = len(results)
    return {
        "success_rate": sum(r["success"] for r in results) / n if n else float("nan"),
        "mean_reward": sum(r["reward"] for r in results) / n if n else float("nan"),
        "tool_call_error_rate": ratio("tool_errors", "tool_calls"),
        "mean_steps": sum(r["steps"] for r in results) / n if n else float("nan"),
        "invalid_output_rate": ratio("invalid_turns", "steps"),
        "cut_turn_rate": ratio("cut_turns", "steps") if all("cut_turns" in r for r in results) else float("nan"),
        "n_tasks": n,
    }


def _trajectory_id(checkpoint: str, tag: str | None, seed: int, index: int, task: EnvTask) -> str:
    """Deterministic, so re-running the same evaluation into a workspace replaces rather than duplicates."""
    key = f"{checkpoint}|{tag}|{seed}|{index}|{task.task_id}"
    return "oe-" + hashlib.sha1(key.encode()).hexdigest()[:20]


def _capture(workspace: Any, trajectory_id: str, agent: str, model: str, task: EnvTask,
             messages: list[dict[str, Any]], turns: list[Turn] | None, reward: float, metadata: dict[str, Any],
             tools: list[dict[str, Any]]) -> None:
    """Write one rollout through the capture SDK, with per-step telemetry when the policy logged it."""
    clock = utcnow()
    assistant_turns = iter(turns or [])
    with workspace.trajectory(agent, trajectory_id=trajectory_id, task_id=task.task_id, model=model,
                              tools=tools, started_at=clock, metadata=metadata) as run:
        for msg in messages:
            if msg["role"] == "assistant" and (turn := next(assistant_turns, None)) is not None:
                clock += timedelta(milliseconds=turn.latency_ms)
                msg = {**msg, "meta": {"timestamp": clock, "model": model, "input_tokens": turn.input_tokens,
                                       "output_tokens": turn.output_tokens, "latency_ms": turn.latency_ms,
                                       "finish_reason": turn.finish_reason}}
            run.record_message(msg)
    for name, value in (("reward", reward), ("success", float(reward >= 1.0))):
        workspace.record_outcome(trajectory_id, name, value, source="env")


def _result(task: EnvTask, episode: Episode, seconds: float, turns: list[Turn] | None) -> dict[str, Any]:
    """One episode's per-task numbers; a failure of the environment's code is recorded in `error` (reward 0)
    instead of stopping the evaluation. The rollout's messages travel with it (traces, reports)."""
    messages, reward = episode.messages, episode.reward
    assistants = [m for m in messages if m["role"] == "assistant"]
    tools = [m for m in messages if m["role"] == "tool"]
    invalid = (sum(t.invalid for t in turns) if turns is not None
               else sum(not (m["content"] or m["tool_calls"]) for m in assistants))
    return {"task_id": task.task_id, "task": task.to_dict(), "final_answer": episode.final_answer, "reward": reward,
            "success": reward >= 1.0, "steps": len(assistants), "tool_calls": len(tools),
            "tool_errors": sum(bool(m.get("is_error")) for m in tools), "invalid_turns": int(invalid),
            **({"cut_turns": sum(t.finish_reason == "length" for t in turns)} if turns is not None else {}),
            "finished": bool(assistants) and not assistants[-1]["tool_calls"], "seconds": seconds,
            **({"error": episode.error} if episode.error else {})}


def _rollouts(make: Callable[[], Environment], tasks: Sequence[EnvTask], policy_factory: PolicyFactory | None,
              shared: ModelPolicy | None, max_steps: int,
              timeout_s: float) -> list[tuple[dict[str, Any], list[dict[str, Any]], list[Turn] | None]]:
    """Every task's episode: (result, messages, turns). A batched model policy (`shared`) advances all
    episodes together, one `generate` per round; a policy factory runs them one after another."""
    if shared is not None:
        shared.episode_turns.clear()  # indices are this call's episodes
        started, ended = time.perf_counter(), {}

        def done(i: int, _: Episode) -> None:
            ended[i] = time.perf_counter()
            progress.report(len(ended), len(tasks))  # episodes done: a terminal (the demo) shows them, Dagster ignores it

        episodes = run_episodes([make() for _ in tasks], shared.batch, tasks, max_steps=max_steps, timeout_s=timeout_s,
                                on_done=done)
        return [(_result(task, ep, ended[i] - started, shared.episode_turns.get(i, [])), ep.messages,
                 shared.episode_turns.get(i, [])) for i, (task, ep) in enumerate(zip(tasks, episodes, strict=True))]
    out = []
    for task in tasks:
        policy = policy_factory(task)  # type: ignore[misc]
        log: list[Turn] | None = getattr(policy, "turns", None)
        first = len(log) if log is not None else 0
        t0 = time.perf_counter()
        episode = run_episode(make(), policy, task, max_steps=max_steps, timeout_s=timeout_s)
        turns = log[first:] if log is not None else None
        out.append((_result(task, episode, time.perf_counter() - t0, turns), episode.messages, turns))
        progress.report(len(out), len(tasks))
    return out


def _score_rewards(fns: Sequence[RewardFunction], task: EnvTask, messages: list[dict[str, Any]],
                   tools: list[dict[str, Any]], timeout_s: float) -> tuple[dict[str, float | None], list[str]]:
    """The spec's TRL reward functions on one whole rollout (a conversational completion, the task dict as
    `ground_truth`); one that raises or hangs is reported and scores None."""
    start = next((i + 1 for i, m in enumerate(messages) if m["role"] == "user"), 0)
    columns = {"prompts": [messages[:start]], "completions": [messages[start:]], "completion_ids": [[]],
               "ground_truth": [json.dumps(task.to_dict(), default=str)], "task_id": [task.task_id],
               "tools": [json.dumps(tools)]}
    scores: dict[str, float | None] = {}
    errors: list[str] = []
    for fn in fns:
        name = getattr(fn, "__name__", repr(fn))
        try:
            value = call_with_timeout(f"reward {name}", fn, timeout_s=timeout_s, **columns)[0]
            scores[name] = None if value is None else float(value)
        except (EnvironmentCallError, TypeError, IndexError, ValueError) as exc:
            scores[name], errors = None, [*errors, str(exc)]
    return scores, errors


def _reward_means(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    names = sorted({k for r in results for k in r.get("rewards", {})})
    means = {}
    for name in names:
        vals = [v for r in results if (v := r["rewards"].get(name)) is not None]
        means[f"reward/{name}"] = sum(vals) / len(vals) if vals else float("nan")
    return means


def online_eval(checkpoint_dir: str | Path | None, *, seed: int = 0, n_tasks: int = 30, max_steps: int = 8,
                workspace: Any = None, tag: str | None = None, policy_factory: PolicyFactory | None = None,
                agent: str | None = None, max_new_tokens: int = TURN_TOKENS, tools_in_prompt: bool = False,
                device: str = "auto", environment: Environment | str = DEFAULT_ENVIRONMENT,
                environment_config: Mapping[str, Any] | None = None, rewards: Sequence[str] = (),
                timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Roll the checkpoint (or `policy_factory(task)`'s policy) out on the environment's
    `eval_tasks(seed, n_tasks)`, one fresh environment instance per episode (a given instance is reset
    instead), and score each rollout with the environment's reward; `rewards` (TRL reward functions,
    'module:function') are reported per rollout and as `reward/<name>` means. With a `workspace`, every
    rollout is captured as a trajectory of `agent` (`ckpt:<name>` by default) with `reward`/`success`
    outcomes (source `env`), tagged in its metadata with the checkpoint, the environment and `heldout`."""
    import torch

    if isinstance(environment, str):
        make, env = environment_factory(environment, environment_config), load_environment(environment, environment_config)
    else:
        env = environment
        make = lambda: environment  # noqa: E731  (a given instance: reset per episode)
    if checkpoint_dir is None and policy_factory is None:
        raise ValueError("give a checkpoint_dir, a policy_factory, or both")
    reward_fns = [load_reward(r) for r in rewards]
    name = Path(checkpoint_dir).name if checkpoint_dir is not None else "policy"
    agent = agent or f"ckpt:{name}"
    shared = None
    if policy_factory is None:  # stateless: one policy serves every task
        shared = model_policy(checkpoint_dir, max_new_tokens=max_new_tokens, tools_in_prompt=tools_in_prompt,
                              device=device, environment=env)
        if not isinstance(environment, str):  # one given instance is reset per episode: they cannot interleave
            one = shared
            policy_factory, shared = (lambda task: one), None
    ckpt = str(Path(checkpoint_dir).resolve()) if checkpoint_dir is not None else None
    env_ref = environment if isinstance(environment, str) else env.name
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    tasks = list(env.eval_tasks(seed, n_tasks))
    with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG state
        torch.manual_seed(seed)
        rollouts = _rollouts(make, tasks, policy_factory, shared, max_steps, timeout_s)
    for i, (task, (result, messages, turns)) in enumerate(zip(tasks, rollouts, strict=True)):
        if reward_fns:
            result["rewards"], errors = _score_rewards(reward_fns, task, messages, env.tools, timeout_s)
            if errors:
                result["reward_errors"] = errors
        tid = _trajectory_id(ckpt or agent, tag, seed, i, task)
        results.append({"index": i, "trajectory_id": tid, **result, "messages": messages})  # read as MLflow traces
        if workspace is not None and messages:
            meta = {"checkpoint": ckpt, "eval_tag": tag, "task": task.to_dict(), "eval_seed": seed,
                    "world": env.name, "environment": env_ref, "heldout": True, "eval_index": i}
            _capture(workspace, tid, agent, name, task, messages, turns, result["reward"], meta, env.tools)
    if workspace is not None:  # curation of that workspace keeps these tasks out of train
        record_heldout(workspace, env_ref, [r["task_id"] for r in results])
    elapsed = time.perf_counter() - started
    # the report (eval/online-*.json, MLflow, Dagster metadata) shows what the model wrote: redacted like a corpus
    tasks, _ = Redactor().redact_data(results)
    return {"checkpoint": ckpt, "agent": agent, "eval_tag": tag, "seed": seed, "max_steps": max_steps,
            "max_new_tokens": max_new_tokens,
            "environment": env_ref, **summarize(results), **_reward_means(results),
            "errors": sum("error" in r for r in results), "seconds": elapsed,
            "seconds_per_rollout": elapsed / len(results) if results else math.nan, "tasks": tasks}


def per_task(report: Mapping[str, Any], key: str = "reward") -> list[float]:
    """A per-task value (reward, success, steps …) in task order. Two reports on the same seed list
    the same tasks in the same order, which is what makes their per-task values pairable."""
    return [float(r[key]) for r in report["tasks"]]
