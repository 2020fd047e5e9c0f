"""What both examples share: scripted agents of mixed skill act in an example environment through the
pipeline's own episode loop (`pipeline.environment.run_episode`), and each episode is written into a
workspace through the capture SDK with its reward and success outcomes.

Why here and not in pipeline/: the pipeline captures real agents; the scripted traffic only exists so
the examples can run the whole loop (capture → join → snapshot → SFT/GRPO → eval) from one command.
Every id and timestamp derives from (seed, day, index), never the wall clock: same seed, same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

from pipeline.capture.workspace import Workspace
from pipeline.environment import Environment, Policy, run_episode
from pipeline.schema import Outcome

# An agent: (task, rng) → a policy for one episode (messages so far → next assistant message).
AgentFn = Callable[[Any, Random], Policy]


@dataclass(frozen=True)
class Agent:
    name: str
    model: str
    act: AgentFn


@dataclass
class PopulateStats:
    """What `populate_with` wrote (the demo entry point prints `trajectories_per_agent` and `late_outcomes`)."""

    trajectories_per_agent: dict[str, int] = field(default_factory=dict)
    successes_per_agent: dict[str, int] = field(default_factory=dict)
    late_outcomes: list[Outcome] = field(default_factory=list)  # examples deliver every outcome at once

    def success_rates(self) -> dict[str, float]:
        return {a: self.successes_per_agent[a] / n for a, n in self.trajectories_per_agent.items() if n}


def record(ws: Workspace, env: Environment, trajectory_id: str, agent: Agent, task: Any,
           messages: list[dict[str, Any]], start: datetime) -> datetime:
    """Replay one finished episode through the capture SDK; returns its (synthetic) end time."""
    clock = start
    with ws.trajectory(agent.name, agent_version="1.0.0", trajectory_id=trajectory_id, task_id=task.task_id,
                       model=agent.model, tools=env.tools, started_at=start,
                       metadata={"world": env.name, "task": task.to_dict()}) as run:
        for msg in messages:
            clock += timedelta(milliseconds=200)
            if msg["role"] in ("system", "user"):
                getattr(run, msg["role"])(msg["content"])
            elif msg["role"] == "tool":
                run.tool_result(msg["tool_call_id"], msg["content"], is_error=msg["is_error"], name=msg["name"])
            else:
                run.assistant(msg["content"], tool_calls=msg["tool_calls"],
                              meta={"timestamp": clock, "model": agent.model,
                                    "finish_reason": "tool_calls" if msg["tool_calls"] else "stop"})
        run.ended_at = clock
    return clock


def populate_with(ws: Workspace, make_env: Callable[[], Environment], tasks: Sequence[Any],
                  agents: Sequence[Agent], *, days: list[str], per_day: int, seed: int = 0,
                  max_steps: int = 8) -> PopulateStats:
    """`per_day` episodes a day: a task drawn from `tasks`, attempted by two different agents, so SFT
    keeps the good attempt and the failed one still lands in the lake with its reward."""
    stats = PopulateStats({a.name: 0 for a in agents}, {a.name: 0 for a in agents})
    for day in days:
        day_start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        plan = Random(f"schedule|{seed}|{day}")
        attempts: list[tuple[Any, Agent]] = []
        while len(attempts) < per_day:
            task = plan.choice(list(tasks))
            attempts += [(task, a) for a in plan.sample(list(agents), 2)]
        outcomes: list[Outcome] = []
        for i, (task, agent) in enumerate(attempts[:per_day]):
            rng = Random(f"attempt|{seed}|{day}|{i}")
            tid = f"{ws.name}-{seed}-{day}-{i:04d}"
            env = make_env()
            episode = run_episode(env, agent.act(task, rng), task, max_steps=max_steps)
            end = record(ws, env, tid, agent, task, episode.messages, day_start + timedelta(minutes=10 * i))
            stats.trajectories_per_agent[agent.name] += 1
            stats.successes_per_agent[agent.name] += int(episode.reward >= 1.0)
            outcomes += [Outcome(trajectory_id=tid, name=name, value=value, source="env",
                                 recorded_at=end + timedelta(seconds=5))
                         for name, value in (("reward", episode.reward), ("success", float(episode.reward >= 1.0)))]
        ws.write_outcomes(outcomes)
    return stats
