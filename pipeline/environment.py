"""The seam between the pipeline and the world an agent acts in: what online evaluation, GRPO and the gate
need from an environment, how a corpus spec names one, and the one episode loop they all share.

The convention (why: docs/environments.md) is gymnasium's reset/step shaped for tool calls, with one
environment instance per episode as in TRL's `GRPOTrainer(environment_factory=...)`:

- `eval_tasks(seed, n)`: held-out tasks, the same ones for the same seed; a task has a `task_id` and a
  JSON-able `to_dict()` (captured as trajectory metadata, and the `ground_truth` of RL rows);
- `load_task(data)`: the task back from that dict (GRPO rows carry it as `ground_truth`);
- `tools`: the tool definitions (OpenAI JSON schema);
- `reset(task)`: start an episode, return its opening messages (system + user);
- `step(name, arguments)`: execute one tool call, return `(content, is_error)`;
- `reward(task, messages)`: the reward of a finished trajectory (1.0 = success).

A spec names the factory as `environment: "package.module:factory"` and its keyword arguments as
`environment_config: {...}`. Reward functions are named the same way (`rewards: [...]`) and keep TRL's
signature, so one callable works here and in plain TRL. Every call into user code runs under a per-call
timeout (`call_with_timeout`): a hang or an exception fails that episode, recorded with its reason, and
the run goes on.
"""

from __future__ import annotations

import importlib
import inspect
import json
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Protocol, runtime_checkable

import orjson

DEFAULT_ENVIRONMENT = "pipeline.demo.environment:make_env"  # the demo world; only the demo config names it
BUILTIN_PREFIX = "tracemill."  # `tracemill.rewards:valid_tool_call` → `pipeline.rewards:valid_tool_call`
DEFAULT_TIMEOUT_S = 30.0

Message = dict[str, Any]
# A policy maps the conversation so far to the next assistant message (or plain text).
Policy = Callable[[list[Message]], "Message | str"]
# A batched policy answers many open episodes at once: (episode indices, their conversations) -> one reply each.
BatchPolicy = Callable[[Sequence[int], Sequence[list[Message]]], "list[Message | str]"]
# A TRL reward function: f(prompts=…, completions=…, completion_ids=…, **dataset columns) -> one value each.
RewardFunction = Callable[..., list[Any]]


class EnvTask(Protocol):
    """One task of an environment: a stable id (pairs attempts, seeds trajectory ids, marks held-out tasks)
    and a JSON-able description (trajectory metadata, and RL ground truth)."""

    @property
    def task_id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Environment(Protocol):
    """A world a policy acts in, with a verifiable reward. One instance runs one episode at a time."""

    name: str
    tools: list[dict[str, Any]]

    def eval_tasks(self, seed: int, n: int) -> Sequence[Any]: ...

    def load_task(self, data: dict[str, Any]) -> Any: ...

    def reset(self, task: Any) -> list[Message]: ...

    def step(self, name: str, arguments: str) -> tuple[str, bool]: ...

    def reward(self, task: Any, messages: list[Message]) -> float: ...


class EnvironmentCallError(RuntimeError):
    """A call into user code (environment, reward function) raised or ran past its timeout."""


def call_with_timeout(what: str, fn: Callable[..., Any], *args: Any, timeout_s: float = DEFAULT_TIMEOUT_S,
                      **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a daemon thread, waited on for `timeout_s`. Why a thread: user code may
    hold unpicklable state (a database handle), so it cannot move to a subprocess; a hung call is abandoned
    (its thread keeps running until the process exits) and reported, which is what keeps the run going.
    Code that must really be stopped (running model-written programs) belongs in a subprocess with limits
    inside the environment's own `step` (see examples/code)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported against the episode, never raised past it
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"tracemill-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise EnvironmentCallError(f"{what}: no result within {timeout_s:g} s (timeout)")
    if "error" in box:
        exc = box["error"]
        raise EnvironmentCallError(f"{what}: {type(exc).__name__}: {exc}") from exc
    return box["value"]


def _resolve(ref: str, what: str) -> Any:
    """`package.module:attr` → the attribute; `tracemill.x:attr` names the built-in `pipeline.x`."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{what} {ref!r} must look like 'package.module:factory'")
    if module.startswith(BUILTIN_PREFIX):
        module = "pipeline." + module[len(BUILTIN_PREFIX):]
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} {ref!r} cannot be loaded ({exc}); check the module path and name") from None


def environment_factory(ref: str = DEFAULT_ENVIRONMENT, config: Mapping[str, Any] | None = None) -> Callable[[], Environment]:
    """A zero-argument factory for fresh instances (one per episode, as TRL's `environment_factory`)."""
    factory = _resolve(ref, "environment")
    kwargs = dict(config or {})

    def make() -> Environment:
        env = factory(**kwargs)
        if not isinstance(env, Environment):
            raise TypeError(f"environment {ref!r} lacks part of the Environment protocol (pipeline.environment): "
                            "it needs name, tools, eval_tasks, load_task, reset, step and reward")
        return env

    return make


@lru_cache(maxsize=16)
def _cached(ref: str, config_json: str) -> Environment:
    return environment_factory(ref, json.loads(config_json))()


def load_environment(ref: str = DEFAULT_ENVIRONMENT, config: Mapping[str, Any] | None = None) -> Environment:
    """One shared instance per (reference, config), for what does not run an episode: tools, tasks."""
    return _cached(ref, json.dumps(dict(config or {}), sort_keys=True, default=str))


def load_reward(ref: str, eos_token_id: int | None = None) -> RewardFunction:
    """A TRL reward function named `module:function`; one that takes `eos_token_id` gets it bound
    (TRL decodes completions without special tokens, so a 'finished turn' check needs the id)."""
    fn = _resolve(ref, "reward")
    if not callable(fn):
        raise ValueError(f"reward {ref!r} is not callable")
    try:
        wants_eos = "eos_token_id" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        wants_eos = False
    if wants_eos:
        bound = partial(fn, eos_token_id=eos_token_id)
        bound.__name__ = getattr(fn, "__name__", ref)  # type: ignore[attr-defined]  # TRL logs rewards by name
        return bound
    return fn


class GuardedReward:
    """A reward function that cannot stop a training run: a call that raises or hangs scores None for the
    batch (TRL leaves it out of the sum), and its reason is kept in `errors` and logged as
    `reward_errors/<name>` through TRL's `log_metric`."""

    def __init__(self, fn: RewardFunction, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.fn, self.timeout_s, self.errors = fn, timeout_s, []
        self.__name__ = getattr(fn, "__name__", repr(fn))

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[Any]:
        log = kwargs.get("log_metric")
        try:
            values = call_with_timeout(f"reward {self.__name__}", self.fn, completions=completions,
                                       timeout_s=self.timeout_s, **kwargs)
            failed = 0.0
        except EnvironmentCallError as exc:
            self.errors.append(str(exc))
            values, failed = [None] * len(completions), 1.0
        if callable(log):
            log(f"reward_errors/{self.__name__}", failed)
        return values


def normalize_assistant(reply: Message | str, calls_so_far: int) -> Message:
    """A policy's reply in tracemill's schema shape: plain text, flat tool calls or OpenAI `function` calls."""
    if not isinstance(reply, dict):
        reply = {"content": str(reply or "")}
    calls = []
    for k, call in enumerate(reply.get("tool_calls") or [], start=calls_so_far + 1):
        fn = call.get("function") or call
        args = fn.get("arguments", "{}")
        calls.append({"id": call.get("id") or f"call_{k}", "name": fn.get("name") or "?",
                      "arguments": args if isinstance(args, str) else orjson.dumps(args).decode()})
    return {"role": "assistant", "content": reply.get("content"), "tool_calls": calls}


@dataclass
class Episode:
    """One finished (or failed) episode: the conversation, the final answer, the reward, and why it
    failed when user code raised or hung (`error`; reward 0 then)."""

    messages: list[Message]
    final_answer: str
    reward: float
    error: str | None = None


def _episode(env: Environment, task: Any, messages: list[Message] | None, *, max_steps: int,
             timeout_s: float) -> Generator[list[Message], Message | str, Episode]:
    """The episode loop as a generator: it yields the conversation whenever the policy must write the next
    assistant turn and is sent that turn back. Why a generator: the same loop then runs one episode with
    a plain policy (`continue_episode`) or many in lockstep with a batched one (`run_episodes`).
    `messages=None` resets the environment on `task` first."""
    try:
        if messages is None:
            messages = list(call_with_timeout(f"{env.name}.reset", env.reset, task, timeout_s=timeout_s))
        messages = list(messages)
        calls = sum(len(m.get("tool_calls") or []) for m in messages)
        while True:
            last = messages[-1] if messages and messages[-1]["role"] == "assistant" else None
            if last is not None:
                if not last["tool_calls"]:
                    break
                for call in last["tool_calls"]:
                    content, is_error = call_with_timeout(f"{env.name}.step({call['name']})", env.step, call["name"],
                                                          call["arguments"], timeout_s=timeout_s)
                    messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["name"],
                                     "content": str(content), "is_error": bool(is_error)})
            if sum(m["role"] == "assistant" for m in messages) >= max_steps:
                return Episode(messages, "", 0.0)
            msg = normalize_assistant((yield messages), calls)
            calls += len(msg["tool_calls"])
            messages.append(msg)
        final = messages[-1]["content"] or ""
        reward = call_with_timeout(f"{env.name}.reward", env.reward, task, messages, timeout_s=timeout_s)
        return Episode(messages, final, float(reward))
    except EnvironmentCallError as exc:
        return Episode(messages or [], "", 0.0, str(exc))


def continue_episode(env: Environment, policy: Policy, task: Any, messages: list[Message], *, max_steps: int,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> Episode:
    """Run an episode from `messages` (the opening, plus any turns already taken): execute the last
    assistant turn's tool calls, ask the policy for the next turn, until a turn without tool calls (the
    final answer) or `max_steps` assistant turns (then the answer is empty). The environment's reward
    scores the result. Errors in user code end the episode with reward 0 and the reason."""
    loop = _episode(env, task, messages, max_steps=max_steps, timeout_s=timeout_s)
    try:
        conversation = next(loop)
        while True:
            conversation = loop.send(policy(conversation))
    except StopIteration as done:
        return done.value


def run_episode(env: Environment, policy: Policy, task: Any, *, max_steps: int = 8,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> Episode:
    """Reset the environment on `task` and let the policy act in it (see `continue_episode`)."""
    return continue_episode(env, policy, task, None, max_steps=max_steps, timeout_s=timeout_s)  # type: ignore[arg-type]


def run_episodes(envs: Sequence[Environment], policy: BatchPolicy, tasks: Sequence[Any], *, max_steps: int = 8,
                 timeout_s: float = DEFAULT_TIMEOUT_S, openings: Sequence[list[Message] | None] | None = None,
                 on_done: Callable[[int, Episode], None] | None = None) -> list[Episode]:
    """Many episodes in lockstep: each round, every episode still open gets its next turn from one call of
    the batched policy (`policy(indices, conversations)`, one reply each), so a model generates all of
    them in one batch. The same loop as `run_episode`, episode by episode; `openings` continue episodes
    from given messages instead of resetting (GRPO's sampled first turns). `on_done(i, episode)` is called
    as each one finishes."""
    starts = openings or [None] * len(tasks)
    loops = [_episode(env, task, opening, max_steps=max_steps, timeout_s=timeout_s)
             for env, task, opening in zip(envs, tasks, starts, strict=True)]
    done: dict[int, Episode] = {}
    waiting: dict[int, list[Message]] = {}

    def advance(i: int, reply: Message | str | None, first: bool = False) -> None:
        try:
            waiting[i] = next(loops[i]) if first else loops[i].send(reply)
        except StopIteration as finished:
            waiting.pop(i, None)
            done[i] = finished.value
            if on_done is not None:
                on_done(i, finished.value)

    for i in range(len(loops)):
        advance(i, None, first=True)
    while waiting:
        order = sorted(waiting)
        replies = policy(order, [waiting[i] for i in order])
        if len(replies) != len(order):
            raise ValueError(f"a batched policy must answer each of the {len(order)} conversations, got {len(replies)}")
        for i, reply in zip(order, replies, strict=True):
            advance(i, reply)
    return [done[i] for i in range(len(loops))]
