"""Scripted agents of mixed skill, and `populate`, which fills a workspace with their runs via the SDK.

Why scripted: a pipeline demo needs realistic, *reproducible* traffic with a known mix of good and bad
attempts at the same task (SFT filters, DPO pairs, KTO labels, RL baselines). Each agent is a script:
a generator that yields assistant messages and receives tool replies. `ScriptPolicy` adapts it to the
rollout interface, so scripted agents and a trained model act in the world through the same code.
Every id and timestamp derives from (seed, day, index), never the wall clock: same seed, same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

import orjson

from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace
from pipeline.demo.cues import cued
from pipeline.demo.rollout import rollout
from pipeline.demo.scoring import numbers_in
from pipeline.demo.world import ITEMS, SEEN_ITEMS, TOOLS, Task, fmt, make_task
from pipeline.schema import Outcome, Preference


@dataclass(frozen=True)
class ToolReply:
    content: str
    is_error: bool


Script = Generator[dict[str, Any], ToolReply, None]
Solve = Generator[dict[str, Any], ToolReply, tuple[float, str]]


def _call(name: str, args: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "tool_calls": [{"name": name, "arguments": args}]}


def _say(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def _first(reply: ToolReply) -> float:
    found = numbers_in(reply.content)
    return found[0] if found else 0.0


def _solve(task: Task, *, slip: Callable[[float], float] | None = None, skip_convert: bool = False,
           narrate: bool = False) -> Solve:
    """The lookup → calculator → convert chain, copying each number from the previous tool result.
    `slip` distorts the copied price (a mis-copy); returns the final amount and its currency."""
    price = _first((yield _call("lookup_price", {"item": task.item}, f"Looking up {task.item}." if narrate else None)))
    if slip:
        price = slip(price)
    expr = f"{fmt(task.quantity)} * {price:.2f}"
    total = _first((yield _call("calculator", {"expression": expr}, "Multiplying." if narrate else None)))
    if task.currency == "USD" or skip_convert:
        return total, "USD"
    args = {"amount": total, "from_currency": "USD", "to_currency": task.currency}
    value = _first((yield _call("convert", args, f"Converting to {task.currency}." if narrate else None)))
    return value, task.currency


def _miscopy(price: float) -> float:
    """Swap the two decimals (2.35 → 2.53), the classic copy slip; +1 when that changes nothing."""
    s = f"{price:.2f}"
    swapped = float(s[:-2] + s[-1] + s[-2])
    return swapped if swapped != price else round(price + 1, 2)


def careful(task: Task, rng: Random) -> Script:
    """Always follows the full chain and copies exactly: the gold standard (reward 1)."""
    value, cur = yield from _solve(task)
    yield _say(f"The answer is {value:.2f} {cur}.")


def hasty(task: Task, rng: Random) -> Script:
    """25%: mis-copies the price; 30%: skips the conversion but still labels the target currency."""
    roll = rng.random()
    value, _ = yield from _solve(task, slip=_miscopy if roll < 0.25 else None, skip_convert=0.25 <= roll < 0.55)
    yield _say(f"The answer is {value:.2f} {task.currency}.")


def _mistake(task: Task, rng: Random) -> dict[str, Any]:
    """A first call that the tools reject: unknown tool, wrong argument name or type, bad expression."""
    return rng.choice([
        _call("get_price", {"item": task.item}),
        _call("lookup_price", {"name": task.item}),
        _call("convert", {"amount": task.item, "from_currency": "USD", "to_currency": task.currency}),
        _call("calculator", {"expression": f"{fmt(task.quantity)} * price of {task.item}"}),
    ])


def confused(task: Task, rng: Random) -> Script:
    """70%: starts with a bad call (is_error=True), then recovers (30%), gives up or guesses."""
    if rng.random() < 0.7:
        reply = yield _mistake(task, rng)
        if reply.is_error:
            roll = rng.random()
            if roll < 0.35:
                yield _say("Sorry, I could not work out the price.")
                return
            if roll < 0.7:
                yield _say(f"The answer is {rng.uniform(1, 60):.2f} {task.currency}.")
                return
    value, cur = yield from _solve(task)
    yield _say(f"The answer is {value:.2f} {cur}.")


def verbose(task: Task, rng: Random) -> Script:
    """Narrates every step and restates the sum; 15% of the time rounds it away to a whole number."""
    value, cur = yield from _solve(task, narrate=True)
    if rng.random() < 0.15:
        yield _say(f"That comes to roughly {round(value)} {cur}.")
        return
    amount = f"{fmt(task.quantity)} {ITEMS[task.item].unit} of {task.item}"
    yield _say(f"So {amount} cost {value:.2f} {cur}. The answer is {value:.2f} {cur}.")


@dataclass(frozen=True)
class Agent:
    name: str
    version: str
    model: str
    script: Callable[[Task, Random], Script]


AGENTS: dict[str, Agent] = {a.name: a for a in [
    Agent("careful", "1.2.0", "demo-large", careful), Agent("hasty", "0.9.1", "demo-mini", hasty),
    Agent("confused", "0.3.0", "demo-nano", confused), Agent("verbose", "2.0.0", "demo-large", verbose),
]}
ATTEMPTS_PER_TASK = 3
_PRICE_PER_MTOK = {"demo-large": (2.5, 10.0), "demo-mini": (0.15, 0.6), "demo-nano": (0.05, 0.4)}
_TOOLS_TOKENS = len(orjson.dumps(TOOLS)) // 4


class ScriptPolicy:
    """Adapts a script to the rollout policy interface (messages so far → next assistant message)."""

    def __init__(self, script: Script):
        self._script, self._started = script, False

    def __call__(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            if not self._started:
                self._started = True
                return next(self._script)
            last = messages[-1]
            return self._script.send(ToolReply(last.get("content") or "", bool(last.get("is_error"))))
        except StopIteration:
            return _say("")


def policy_for(agent: str, task: Task, seed: int = 0) -> ScriptPolicy:
    """A fresh policy of a named scripted agent for one task: baselines for evaluating trained models."""
    return ScriptPolicy(AGENTS[agent].script(task, Random(f"policy|{seed}|{task.task_id}|{agent}")))


@dataclass
class DemoStats:
    """What `populate` produced; `late_outcomes` are held back until `deliver_late` writes them."""

    trajectories_per_agent: dict[str, int] = field(default_factory=dict)
    successes_per_agent: dict[str, int] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)  # trajectory_id → reward
    outcomes_written: int = 0
    late_outcomes: list[Outcome] = field(default_factory=list)
    late_delivered: int = 0
    preferences: int = 0
    bad_records: int = 0

    @property
    def trajectories(self) -> int:
        return sum(self.trajectories_per_agent.values())

    @property
    def successes(self) -> int:
        return sum(self.successes_per_agent.values())

    @property
    def success_rate(self) -> float:
        return self.successes / self.trajectories if self.trajectories else 0.0

    def success_rates(self) -> dict[str, float]:
        return {a: self.successes_per_agent.get(a, 0) / n for a, n in self.trajectories_per_agent.items()}


def _tokens(msg: dict[str, Any]) -> int:
    """~4 characters a token: plausible telemetry without shipping a tokenizer."""
    text = (msg.get("content") or "") + "".join(c["name"] + c["arguments"] for c in msg.get("tool_calls") or [])
    return max(1, len(text) // 4)


def _record(ws: Workspace, trajectory_id: str, agent: Agent, task: Task, messages: list[dict[str, Any]],
            start: datetime, rng: Random) -> datetime:
    """Replay a rollout through the capture SDK with per-step telemetry; returns the end time."""
    clock, context = start, _TOOLS_TOKENS
    price_in, price_out = _PRICE_PER_MTOK[agent.model]
    with ws.trajectory(agent.name, agent_version=agent.version, trajectory_id=trajectory_id,
                       task_id=task.task_id, model=agent.model, tools=TOOLS, started_at=start,
                       metadata={"world": "demo", "task": task.to_dict()}) as run:
        for msg in messages:
            role, out = msg["role"], _tokens(msg)
            if role in ("system", "user"):
                getattr(run, role)(msg["content"])
            elif role == "tool":
                clock += timedelta(milliseconds=rng.randint(15, 150))
                run.tool_result(msg["tool_call_id"], msg["content"], is_error=msg["is_error"], name=msg["name"])
            else:
                latency = rng.randint(250, 900) + 15 * out
                clock += timedelta(milliseconds=latency)
                run.assistant(msg["content"], tool_calls=msg["tool_calls"], meta={
                    "timestamp": clock, "model": agent.model, "input_tokens": context, "output_tokens": out,
                    "latency_ms": float(latency), "cost_usd": round((context * price_in + out * price_out) / 1e6, 6),
                    "finish_reason": "tool_calls" if msg["tool_calls"] else "stop"})
            context += out
        run.ended_at = clock  # never the wall clock: same seed, same bytes
    return clock


def make_bad_records(seed: int, day: str, n: int) -> list[dict[str, Any]]:
    """Raw records the lake must quarantine: a wrong role, a missing agent, tool calls on a user turn."""
    out = []
    for k in range(n):
        rec: dict[str, Any] = {"trajectory_id": f"demo-{seed}-{day}-bad{k}", "agent": {"name": "careful"},
                               "started_at": f"{day}T12:00:00Z", "messages": [{"role": "user", "content": "Price?"}]}
        if k % 3 == 0:
            rec["messages"].append({"role": "robot", "content": "beep"})
        elif k % 3 == 1:
            del rec["agent"]
        else:
            rec["messages"][0]["tool_calls"] = [{"id": "c1", "name": "lookup_price", "arguments": "{}"}]
        out.append(rec)
    return out


def populate(ws: Workspace, *, days: list[str], per_day: int, seed: int = 0, late_fraction: float = 0.3,
             bad_records: int = 2, preferences_per_day: int = 2, items: tuple[str, ...] | None = None,
             cues: bool = False) -> DemoStats:
    """Write `per_day` trajectories for each ISO day: tasks drawn per day, each attempted by
    `ATTEMPTS_PER_TASK` different agents. Reward and success outcomes are written at once, except for a
    `late_fraction` of trajectories whose outcomes are held in `stats.late_outcomes` (see
    `deliver_late`). A few human preferences pair a successful attempt with a failed one. `items` limits
    the tasks to those items (default: all); `cues` makes every agent name the question's currency before it
    decides whether to convert (`pipeline.demo.cues`)."""
    stats = DemoStats(trajectories_per_agent={a: 0 for a in AGENTS}, successes_per_agent={a: 0 for a in AGENTS})
    for day in days:
        day_start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        plan = Random(f"schedule|{seed}|{day}")
        attempts: list[tuple[Task, Agent]] = []
        while len(attempts) < per_day:
            task = make_task(plan, items)
            attempts += [(task, AGENTS[a]) for a in plan.sample(sorted(AGENTS), ATTEMPTS_PER_TASK)]
        now: list[Outcome] = []
        by_task: dict[str, list[tuple[str, float]]] = {}
        for i, (task, agent) in enumerate(attempts[:per_day]):
            rng = Random(f"attempt|{seed}|{day}|{i}")
            tid = f"demo-{seed}-{day}-{i:04d}"
            start = day_start + timedelta(seconds=round((i + 0.8 * rng.random()) * 86400 / per_day, 3))
            script = agent.script(task, rng)
            messages, _, reward = rollout(ScriptPolicy(cued(script, task) if cues else script), task)
            end = _record(ws, tid, agent, task, messages, start, rng)
            stats.trajectories_per_agent[agent.name] += 1
            stats.successes_per_agent[agent.name] += int(reward >= 1.0)
            stats.rewards[tid] = reward
            by_task.setdefault(task.task_id, []).append((tid, reward))
            late = rng.random() < late_fraction
            at = (day_start + timedelta(days=rng.randint(1, 3), hours=rng.randint(0, 23)) if late
                  else end + timedelta(seconds=rng.randint(1, 30)))
            outs = [Outcome(trajectory_id=tid, name=name, value=v, source="env", recorded_at=at)
                    for name, v in (("reward", reward), ("success", float(reward >= 1.0)))]
            (stats.late_outcomes if late else now).extend(outs)
        stats.outcomes_written += ws.write_outcomes(now)
        prefs = []
        for task_id, tries in by_task.items():
            good = [t for t, r in tries if r >= 1.0]
            bad = [t for t, r in tries if r < 1.0]
            if good and bad and len(prefs) < preferences_per_day:
                prefs.append(Preference(preference_id=f"pref-{seed}-{day}-{len(prefs)}", chosen=good[0],
                                        rejected=bad[0], task_id=task_id, source="human",
                                        recorded_at=day_start + timedelta(hours=23, minutes=len(prefs))))
        stats.preferences += ws.write_preferences(prefs)  # explicit ids: record_preference draws uuid4
    if bad_records and days:
        stats.bad_records = ws.writer.append("trajectory", days[0], make_bad_records(seed, days[0], bad_records))
    return stats


def populate_seen_items(ws: Workspace, *, days: list[str], per_day: int, seed: int = 0) -> DemoStats:
    """The real-model lane's traffic (`make demo-real`): as `populate`, but no trajectory names an item of
    `UNSEEN_ITEMS`, which its held-out tasks ask about (`make_env(unseen_item_share=…)`), and every agent
    names the question's currency right before it decides whether to convert (`pipeline.demo.cues`: why)."""
    return populate(ws, days=days, per_day=per_day, seed=seed, items=SEEN_ITEMS, cues=True)


def items_named(ws: Workspace) -> set[str]:
    """The items the workspace's captured traffic asks about (each trajectory's task metadata): a held-out task
    about any other item is one whose name training never saw."""
    tasks = ((line.record.get("metadata") or {}).get("task") for line in read_landed(ws.landing, "trajectory")
             if isinstance(line.record, dict))
    return {t["item"] for t in tasks if isinstance(t, dict) and t.get("item")}


def deliver_late(ws: Workspace, stats: DemoStats) -> int:
    """Write the held-back outcomes (recorded days after their trajectories) and forget them."""
    n = ws.write_outcomes(stats.late_outcomes)
    stats.late_delivered += n
    stats.late_outcomes = []
    return n
