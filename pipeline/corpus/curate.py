"""Curation: from joined trajectories to the rows of one corpus.

Order matters and is fixed here, in one place: filter → quality rules → redaction → de-duplication
→ split. Redaction runs before anything is hashed, tokenized or snapshotted, so no corpus ever holds
an unredacted secret. Every dropped row is counted by the rule that dropped it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
import polars as pl

from pipeline.corpus.redact import Redactor
from pipeline.lake.filters import apply_filter

CURATED_SCHEMA: dict[str, Any] = {
    "trajectory_id": pl.String, "task_id": pl.String, "agent": pl.String, "model": pl.String,
    "day": pl.String, "reward": pl.Float64, "split": pl.String, "messages": pl.String,
    "tools": pl.String, "content_hash": pl.String, "n_messages": pl.Int32, "n_tool_calls": pl.Int32,
}


@dataclass
class CurationStats:
    """Counts behind a corpus's rows: every dropped trajectory (or pair, or task) counted by reason."""

    input_rows: int = 0
    after_filter: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: dict(v) if isinstance(v := getattr(self, f.name), Counter) else v for f in fields(self)}


def quality_problem(messages: list[dict[str, Any]]) -> str | None:
    """The first reason this conversation is unfit to train on, or None."""
    assistant = [m for m in messages if m.get("role") == "assistant"]
    if not assistant:
        return "no_assistant_turn"
    if any(not (m.get("content") or "").strip() and not m.get("tool_calls") for m in assistant):
        return "empty_assistant_turn"
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    for m in assistant:
        for call in m.get("tool_calls") or []:
            if call.get("id") not in answered:
                return "tool_call_without_result"
            try:
                orjson.loads(call.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                return "invalid_tool_arguments"
    return None


_WS = re.compile(r"\s+")


def content_hash(messages: list[dict[str, Any]]) -> str:
    """Hash of the normalised conversation (case and whitespace folded): near-identical runs collide."""
    parts = []
    for m in messages:
        calls = "|".join(f"{c.get('name')}:{_WS.sub('', c.get('arguments') or '')}" for c in m.get("tool_calls") or [])
        parts.append(f"{m.get('role')}:{_WS.sub(' ', (m.get('content') or '').strip().lower())}:{calls}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SplitRule:
    """`eval_fraction` plus the environment's held-out task ids: those never reach train; they go to
    `heldout_split` ("eval", or "drop" to leave them out of the corpus)."""

    eval_fraction: float
    heldout: frozenset[str] = frozenset()
    heldout_split: str = "eval"


def split_of(key: str, eval_fraction: float | SplitRule) -> str:
    """Stable train/eval assignment by hash of the task id: all attempts at a task share a split. A held-out
    task (`SplitRule.heldout`) is never train, whatever its hash."""
    if isinstance(eval_fraction, SplitRule):
        if key in eval_fraction.heldout:
            return eval_fraction.heldout_split
        eval_fraction = eval_fraction.eval_fraction
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < eval_fraction else "train"


def redactor_for(redact: bool | Redactor) -> Redactor | None:
    """The redactor a `redact` option asks for: a given one (a workspace's, with its id key), a default
    one for True, none for False."""
    return redact if isinstance(redact, Redactor) else Redactor() if redact else None


def curate(joined: pl.DataFrame, *, filter_expr: str = "", eval_fraction: float | SplitRule = 0.2,
           redact: bool | Redactor = True) -> tuple[pl.DataFrame, CurationStats]:
    """Curated corpus rows (see CURATED_SCHEMA) and the counts behind them. Every text that reaches the
    corpus is redacted (messages, tools, agent, model; ids pseudonymised); the split is taken from the
    original task id, so redaction never moves a task between splits."""
    stats = CurationStats(input_rows=joined.height)
    df = apply_filter(joined, filter_expr) if joined.height else joined
    stats.after_filter = df.height
    redactor = redactor_for(redact)
    rows, seen = [], set()
    for r in df.sort("started_at", "trajectory_id").iter_rows(named=True):
        messages = orjson.loads(r["messages_json"])
        problem = quality_problem(messages)
        if problem:
            stats.dropped[problem] += 1
            continue
        if redactor is not None:
            messages, counts = redactor.redact_messages(messages)
            stats.redactions.update(counts)
        digest = content_hash(messages)
        if digest in seen:
            stats.dropped["duplicate"] += 1
            continue
        seen.add(digest)
        split = split_of(r.get("task_id") or r["trajectory_id"], eval_fraction)
        stats.splits[split] += 1
        row = {
            "trajectory_id": r["trajectory_id"], "task_id": r.get("task_id"), "agent": r.get("agent"),
            "model": r.get("model"), "day": r.get("day"), "reward": r.get("reward"), "split": split,
            "messages": orjson.dumps(messages).decode(), "tools": r.get("tools_json") or "[]",
            "content_hash": digest, "n_messages": len(messages), "n_tool_calls": r.get("n_tool_calls"),
        }
        rows.append(redactor.redact_fields(row, stats.redactions) if redactor is not None else row)
    stats.kept = len(rows)
    return pl.DataFrame(rows, schema=CURATED_SCHEMA), stats
