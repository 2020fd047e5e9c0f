"""tau-bench (v1) results, tau-bench few-shot display strings, and tau2-bench `Results` files.

tau-bench v1: a list of `{task_id, reward, info, traj, trial}`; `traj` is OpenAI chat (system prompt
included). Real runs reuse tool-call ids across turns (the linker renames repeats). `task_id` alone is
ambiguous across domains (airline 12 ≠ retail 12) and the record does not name its domain, so the
grouping key is the task id plus a hash of the task instruction. `reward` and the numeric parts of
`info.reward_info.info` (r_actions, r_outputs) become outcomes. No timestamps exist. Tool results
starting with "Error" (how tau-bench environments report a failed call) are marked `is_error`.

tau2: `{timestamp, info, tasks[], simulations[]}`; each simulation is a trajectory with real times,
per-message usage/cost (the simulated USER is an LLM too, so user turns carry usage as well), tool
messages that keep the call id in `id`, and `reward_info` → reward, db_reward, reward_breakdown.*
and the termination reason as a label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import (
    Context,
    Item,
    at,
    build_outcome,
    build_trajectory,
    content_hash,
    isolated,
    per_record,
    stable_id,
)
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import chat_message, chat_messages, make_meta, parse_display
from pipeline.capture.importers.source import Record, Source
from pipeline.schema import Message


def mark_errors(messages: list[Message]) -> list[Message]:
    """tau-bench environments report a failed tool as a result string starting with "Error:"."""
    return [m.model_copy(update={"is_error": True}) if m.role == "tool" and (m.content or "").startswith("Error")
            else m for m in messages]


# ---- tau-bench v1 ---------------------------------------------------------------------------------
def sniff_tau_bench(value: Any) -> bool:
    sample = value[0] if isinstance(value, list) and value else value
    return isinstance(sample, dict) and isinstance(sample.get("traj"), list) and "reward" in sample


def convert_tau_bench(src: Source, ctx: Context) -> Iterator[Item]:
    def one(value: Any, rec: Record) -> Iterator[Item]:
        notes: Counter[str] = Counter()
        messages = mark_errors(chat_messages(value["traj"], CallLinker(notes), notes, path="traj"))
        info = value.get("info") if isinstance(value.get("info"), dict) else {}
        task = info.get("task") if isinstance(info.get("task"), dict) else {}
        task_key = content_hash(task.get("instruction"), 8) if task.get("instruction") else None
        traj = build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, value.get("task_id"), value.get("trial"), content_hash(value)),
            messages=messages, original={k: v for k, v in value.items() if k != "traj"}, agent="tau-bench",
            task_id=stable_id(ctx.fmt, value.get("task_id"), task_key), notes=notes, trial=value.get("trial"),
            user_id=task.get("user_id"))
        yield traj
        with at("reward"):
            yield build_outcome(traj, "reward", float(value["reward"]), source="env")
        parts = ((info.get("reward_info") or {}).get("info") or {})
        for key, v in sorted(parts.items()):
            if isinstance(v, int | float) and not isinstance(v, bool):
                yield build_outcome(traj, f"reward.{key}", float(v), source="env")

    return per_record(src.records(), one)


# ---- tau-bench few-shot display strings -----------------------------------------------------------
def sniff_tau_fewshot(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("messages_display"), str)


def convert_tau_fewshot(src: Source, ctx: Context) -> Iterator[Item]:
    """Lossy by nature: tool calls were flattened to `assistant: None`, so calls have no names or
    arguments and tool results no links. Imported as text turns and marked `lossy` in metadata."""

    def one(value: Any, rec: Record) -> Iterator[Item]:
        with at("messages_display"):
            messages = mark_errors(parse_display(value["messages_display"]))
        yield build_trajectory(ctx, trajectory_id=stable_id(ctx.fmt, content_hash(value)), messages=messages,
                               original=value, agent="tau-bench", lossy="tool calls flattened in the source")

    return per_record(src.records(), one)


# ---- tau2-bench -----------------------------------------------------------------------------------
def sniff_tau2(value: Any) -> bool:
    if isinstance(value, dict) and isinstance(value.get("simulations"), list):
        return True
    return isinstance(value, dict) and "reward_info" in value and isinstance(value.get("messages"), list)


def _tau2_simulation(ctx: Context, sim: dict[str, Any], info: dict[str, Any],
                     tasks: dict[str, Any]) -> Iterator[Item]:
    notes: Counter[str] = Counter()
    linker = CallLinker(notes)
    messages = []
    for i, m in enumerate(sim["messages"]):
        with at("messages", i):
            raw = m.get("raw_data") if isinstance(m.get("raw_data"), dict) else {}
            meta = make_meta(timestamp=m.get("timestamp"), usage=m.get("usage"), cost_usd=m.get("cost") or None,
                             finish_reason=raw.get("finish_reason"), turn_idx=m.get("turn_idx"),
                             requestor=m.get("requestor"))
            messages.append(chat_message(m, linker, notes, result_id_keys=("tool_call_id", "id"), meta=meta))
    agent_info = info.get("agent_info") or {}
    domain = (info.get("environment_info") or {}).get("domain_name")
    task_id = sim.get("task_id")
    traj = build_trajectory(
        ctx, trajectory_id=stable_id(ctx.fmt, sim.get("id") or content_hash(sim)), messages=messages,
        original=sim, agent=agent_info.get("implementation") or "tau2", model=agent_info.get("llm"),
        task_id=stable_id(ctx.fmt, domain, task_id), started_at=sim.get("start_time") or sim.get("timestamp"),
        ended_at=sim.get("end_time"), notes=notes, trial=sim.get("trial"), task=tasks.get(str(task_id)),
        run_info=info or None, user_model=(info.get("user_info") or {}).get("llm"))
    yield traj
    ri = sim.get("reward_info") or {}
    when = sim.get("end_time") or sim.get("timestamp")
    if ri.get("reward") is not None:
        yield build_outcome(traj, "reward", float(ri["reward"]), recorded_at=when,
                            reward_basis=ri.get("reward_basis"))
    db = ri.get("db_check") or {}
    if db.get("db_reward") is not None:
        yield build_outcome(traj, "db_reward", float(db["db_reward"]), recorded_at=when)
    for key, v in sorted((ri.get("reward_breakdown") or {}).items()):
        yield build_outcome(traj, f"reward.{key}", float(v), recorded_at=when)
    if sim.get("termination_reason"):
        yield build_outcome(traj, "termination_reason", label=str(sim["termination_reason"]), recorded_at=when)


def convert_tau2(src: Source, ctx: Context) -> Iterator[Item]:
    """A record is a whole Results file (its simulations each become a trajectory) or one simulation.
    A bad simulation is reported as `simulations.N.<field>` and the others still import."""
    for rec in src.records():
        value = rec.value
        if rec.error is not None or not isinstance(value, dict) or "simulations" not in value:
            yield from per_record([rec], lambda v, r: _tau2_simulation(ctx, v, {}, {}))
            continue
        info = value.get("info") if isinstance(value.get("info"), dict) else {}
        tasks = {str(t.get("id")): t for t in value.get("tasks") or [] if isinstance(t, dict)}
        for i, sim in enumerate(value["simulations"]):
            yield from isolated(rec, f"simulations.{i}",
                                lambda sim=sim, info=info, tasks=tasks: _tau2_simulation(ctx, sim, info, tasks))
