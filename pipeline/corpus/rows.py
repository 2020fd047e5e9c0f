"""Rows for each training type (sft, dpo, kto, rl) from the same joined trajectories.

A spec only names a format, so every format starts from the *same* cleaned attempts (filter → quality →
redaction → dedupe with `pipeline.corpus.curate`'s rules and order) and the same split by task id: a task held
out of SFT is held out of DPO, KTO and RL too. Messages stay JSON strings in tracemill's schema
(`pipeline.corpus.export` makes TRL shapes). A *prompt* runs up to and including the first user message; the
*completion* is the rest and starts with an assistant turn, where TRL and `training_pref` cut a sequence.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from pipeline.corpus.curate import (
    CurationStats,
    SplitRule,
    content_hash,
    curate,
    quality_problem,
    redactor_for,
    split_of,
)
from pipeline.corpus.redact import Redactor
from pipeline.lake.filters import apply_filter
from pipeline.lake.ingest import PREFERENCE_SCHEMA

TRAINING_FORMATS = ("sft", "dpo", "kto", "rl")  # `format:` of a corpus spec; not import or chat formats
ROW_KEY = {"sft": "trajectory_id", "dpo": "pair_id", "kto": "trajectory_id", "rl": "task_id"}
DPO_SCHEMA: dict[str, Any] = {
    "pair_id": pl.String, "task_id": pl.String, "prompt": pl.String, "chosen": pl.String, "rejected": pl.String,
    "chosen_id": pl.String, "rejected_id": pl.String, "chosen_reward": pl.Float64, "rejected_reward": pl.Float64,
    "source": pl.String, "split": pl.String, "tools": pl.String}
KTO_SCHEMA: dict[str, Any] = {
    "trajectory_id": pl.String, "task_id": pl.String, "prompt": pl.String, "completion": pl.String,
    "label": pl.Boolean, "reward": pl.Float64, "split": pl.String, "tools": pl.String}
RL_SCHEMA: dict[str, Any] = {"task_id": pl.String, "prompt": pl.String, "ground_truth": pl.String,
                             "split": pl.String, "tools": pl.String}
_SORTED = orjson.OPT_SORT_KEYS
_OPTIONS = {"dpo": ("min_margin", "max_pairs_per_task"), "kto": ("threshold",), "rl": ("threshold",)}


@dataclass
class FormatStats(CurationStats):
    """CurationStats plus where DPO pairs came from (outcome pairs vs explicit preferences)."""

    sources: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Attempt:
    """One cleaned trajectory: redacted messages cut into prompt and completion, redacted tools. The ids
    are the lake's (preferences name them); `public_id` / `public_task` are what a corpus row shows."""

    trajectory_id: str
    task_id: str | None
    reward: float | None
    prompt: list[dict[str, Any]]
    completion: list[dict[str, Any]]
    tools: str
    metadata: dict[str, Any]
    prompt_key: str  # same key = same prompt text and tools: the condition for comparing completions
    public_id: str = ""
    public_task: str | None = None


def prompt_and_completion(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system + first user message, everything after it). Raises ValueError without a user message."""
    for i, m in enumerate(messages):
        if m.get("role") == "user":
            return messages[:i + 1], messages[i + 1:]
    raise ValueError("conversation has no user message")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _cut_problem(messages: list[dict[str, Any]]) -> str | None:
    """Why this conversation cannot be cut into a prompt and a completion, or None."""
    roles = [m.get("role") for m in messages]
    if "user" not in roles:
        return "no_user_turn"
    return None if roles[roles.index("user") + 1:][:1] == ["assistant"] else "no_completion"


def clean_attempts(joined: pl.DataFrame, stats: FormatStats, *, filter_expr: str = "",
                   redactor: Redactor | None = None) -> tuple[list[Attempt], dict[str, str]]:
    """Attempts that pass filter → quality → redaction → dedupe (pipeline.corpus.curate's order and rules),
    in (started_at, trajectory_id) order, and the reason every other trajectory id was dropped."""
    stats.input_rows = joined.height
    df = apply_filter(joined, filter_expr) if joined.height else joined
    stats.after_filter = df.height
    gone = dict.fromkeys(set(joined["trajectory_id"].to_list()) - set(df["trajectory_id"].to_list()), "filtered")
    kept, seen = [], set()
    ordered = df.sort("started_at", "trajectory_id").with_columns(pl.col("reward").fill_nan(None))
    for r in ordered.iter_rows(named=True):
        messages = orjson.loads(r["messages_json"])
        if not (problem := quality_problem(messages)):
            if redactor is not None:
                messages, counts = redactor.redact_messages(messages)
                stats.redactions.update(counts)
            digest = content_hash(messages)
            problem = "duplicate" if digest in seen else _cut_problem(messages)
        if problem:
            stats.dropped[problem] += 1
            gone[r["trajectory_id"]] = problem
            continue
        seen.add(digest)
        prompt, completion = prompt_and_completion(messages)
        public = {"trajectory_id": r["trajectory_id"], "task_id": r.get("task_id"), "tools": r.get("tools_json") or "[]"}
        if redactor is not None:
            public = redactor.redact_fields(public, stats.redactions)
        tools = public["tools"]  # the prompt key: role and text only (step `meta` differs per run)
        key = orjson.dumps([[m.get("role"), m.get("content")] for m in prompt] + [orjson.loads(tools)], option=_SORTED)
        kept.append(Attempt(r["trajectory_id"], r.get("task_id"), r["reward"], prompt, completion, tools,
                            orjson.loads(r.get("metadata_json") or "{}"), hashlib.sha1(key).hexdigest(),
                            public["trajectory_id"], public["task_id"]))
    return kept, gone


def _finish(rows: list[dict], schema: dict[str, Any], stats: FormatStats) -> tuple[pl.DataFrame, FormatStats]:
    stats.kept = len(rows)
    stats.splits.update(r["split"] for r in rows)
    return pl.DataFrame(rows, schema=schema), stats


def _pair(chosen: Attempt, rejected: Attempt, source: str, task_id: str | None, eval_fraction: float | SplitRule,
          public_task: str | None) -> dict:
    """A DPO row; its ids are the public ones (the pair id is hashed from them too), its split the task's."""
    pair_id = "p-" + hashlib.sha1(f"{chosen.public_id}\x1f{rejected.public_id}".encode()).hexdigest()[:16]
    return {"pair_id": pair_id, "task_id": public_task, "prompt": _dumps(chosen.prompt),
            "chosen": _dumps(chosen.completion), "rejected": _dumps(rejected.completion),
            "chosen_id": chosen.public_id, "rejected_id": rejected.public_id,
            "chosen_reward": chosen.reward, "rejected_reward": rejected.reward, "source": source,
            "split": split_of(task_id or chosen.trajectory_id, eval_fraction), "tools": chosen.tools}


def _preference_problem(pref: dict[str, Any], by_id: dict[str, Attempt], gone: dict[str, str]) -> str | None:
    for side in ("chosen", "rejected"):
        if pref[side] not in by_id:
            return f"{side}_{gone.get(pref[side], 'not_found')}"
    chosen, rejected = by_id[pref["chosen"]], by_id[pref["rejected"]]
    if chosen is rejected:
        return "same_trajectory"
    claimed = pref.get("task_id")
    if chosen.task_id != rejected.task_id or (claimed and chosen.task_id and claimed != chosen.task_id):
        return "different_task"
    return "different_prompt" if chosen.prompt_key != rejected.prompt_key else None


def dpo_pairs(joined: pl.DataFrame, preferences: pl.DataFrame | None = None, *, min_margin: float = 0.5,
              max_pairs_per_task: int = 4, eval_fraction: float | SplitRule = 0.2, filter_expr: str = "",
              redact: bool | Redactor = True) -> tuple[pl.DataFrame, FormatStats]:
    """Chosen/rejected pairs (DPO_SCHEMA). Explicit preferences come first (a later judgement of a pair wins)
    and replace outcome pairs of the same two trajectories; outcome pairs join attempts at one task *and*
    prompt whose rewards differ by ≥ min_margin, widest first, at most max_pairs_per_task per task."""
    if min_margin <= 0:
        raise ValueError("min_margin must be > 0: a pair needs a strictly better chosen completion")
    stats, redactor = FormatStats(), redactor_for(redact)
    attempts, gone = clean_attempts(joined, stats, filter_expr=filter_expr, redactor=redactor)
    stats.dropped = Counter({f"trajectory_{k}": n for k, n in stats.dropped.items()})  # apart from pair drops
    by_id = {a.trajectory_id: a for a in attempts}
    pairs: dict[frozenset[str], dict[str, Any]] = {}
    prefs = preferences if preferences is not None else pl.DataFrame(schema=PREFERENCE_SCHEMA)
    for p in prefs.sort("recorded_at", "preference_id").iter_rows(named=True):
        if problem := _preference_problem(p, by_id, gone):
            stats.dropped[f"preference_{problem}"] += 1
            continue
        key = frozenset((p["chosen"], p["rejected"]))
        if key in pairs:
            stats.dropped["preference_superseded"] += 1
        chosen, claimed = by_id[p["chosen"]], p.get("task_id")
        public = chosen.public_task if chosen.task_id or redactor is None else redactor.redact_id(claimed, stats.redactions)
        pairs[key] = _pair(chosen, by_id[p["rejected"]], "preference", chosen.task_id or claimed, eval_fraction,
                           public)
    groups: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
    for a in (a for a in attempts if a.task_id is not None and a.reward is not None):
        groups[(a.task_id, a.prompt_key)].append(a)
    for (task_id, _), group in sorted(groups.items()):
        candidates = sorted(((c, r) for c in group for r in group if c.reward - r.reward >= min_margin),
                            key=lambda cr: (cr[1].reward - cr[0].reward, cr[0].trajectory_id, cr[1].trajectory_id))
        taken = 0
        for chosen, rejected in candidates:
            key = frozenset((chosen.trajectory_id, rejected.trajectory_id))
            if key in pairs:
                stats.dropped["outcome_pair_has_preference"] += 1
            elif taken >= max_pairs_per_task:
                stats.dropped["over_max_pairs_per_task"] += 1
            else:
                pairs[key] = _pair(chosen, rejected, "outcome", task_id, eval_fraction, chosen.public_task)
                taken += 1
    rows = sorted(pairs.values(), key=lambda p: (p["task_id"] or "", p["source"], p["chosen_id"], p["rejected_id"]))
    stats.sources.update(p["source"] for p in rows)
    return _finish(rows, DPO_SCHEMA, stats)


def kto_rows(joined: pl.DataFrame, *, threshold: float = 0.5, eval_fraction: float | SplitRule = 0.2, filter_expr: str = "",
             redact: bool | Redactor = True) -> tuple[pl.DataFrame, FormatStats]:
    """One unpaired example per attempt (KTO_SCHEMA): label = reward ≥ threshold; no reward, no row."""
    stats = FormatStats()
    attempts, _ = clean_attempts(joined, stats, filter_expr=filter_expr, redactor=redactor_for(redact))
    rows = []
    for a in attempts:
        if a.reward is None:
            stats.dropped["no_reward"] += 1
            continue
        rows.append({"trajectory_id": a.public_id, "task_id": a.public_task, "prompt": _dumps(a.prompt),
                     "completion": _dumps(a.completion), "label": a.reward >= threshold, "reward": a.reward,
                     "split": split_of(a.task_id or a.trajectory_id, eval_fraction), "tools": a.tools})
    return _finish(rows, KTO_SCHEMA, stats)


def rl_rows(joined: pl.DataFrame, eval_fraction: float | SplitRule = 0.2, *, threshold: float = 0.5, filter_expr: str = "",
            redact: bool | Redactor = True) -> tuple[pl.DataFrame, FormatStats]:
    """One prompt per task (RL_SCHEMA; no task id: its own task), the best-rewarded attempt's. Ground truth
    (redacted: it reaches the corpus) is any attempt's `metadata["task"]` dict, else the best attempt's
    final answer when its reward ≥ threshold (a failed attempt's answer is no truth)."""
    stats, redactor = FormatStats(), redactor_for(redact)
    attempts, _ = clean_attempts(joined, stats, filter_expr=filter_expr, redactor=redactor)
    tasks: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        tasks[a.task_id or a.trajectory_id].append(a)  # the key pipeline.corpus.curate splits by
    rows = []
    for key, group in tasks.items():  # insertion order = first attempt's (started_at, id): deterministic
        best = sorted(group, key=lambda a: (a.reward is None, -(a.reward or 0.0)))  # stable: earliest first
        task = next((a.metadata["task"] for a in best if isinstance(a.metadata.get("task"), dict)), None)
        top, good = best[0], best[0].reward is not None and best[0].reward >= threshold
        answer = next((m.get("content") for m in reversed(top.completion) if m.get("role") == "assistant"
                       and not m.get("tool_calls")), None) if good else None
        truth = _dumps(task) if task is not None else _dumps(answer) if answer else None
        if truth is None:
            stats.dropped["no_ground_truth"] += 1
            continue
        if redactor is not None:
            [msg], counts = redactor.redact_messages([{"role": "user", "content": truth}])
            truth = msg["content"]
            stats.redactions.update(counts)
        rows.append({"task_id": top.public_task if top.task_id else top.public_id, "prompt": _dumps(top.prompt),
                     "ground_truth": truth,
                     "split": split_of(key, eval_fraction), "tools": top.tools})
        stats.sources["metadata_task" if task is not None else "best_answer"] += 1
    return _finish(rows, RL_SCHEMA, stats)


def build_rows(format: str, joined: pl.DataFrame, preferences: pl.DataFrame | None = None,
               spec_options: Mapping[str, Any] | Any = None, redactor: Redactor | None = None,
               heldout: frozenset[str] = frozenset(), heldout_split: str = "eval") -> tuple[pl.DataFrame, Any]:
    """Rows of one corpus format. `spec_options` is a CorpusSpec (its filter, eval_fraction, redact) or a
    mapping of those plus the format's own options (dpo: min_margin, max_pairs_per_task; kto/rl:
    threshold); an unknown key is an error, so a typo never silently falls back to a default. `redactor`
    (a workspace's, keyed for its ids) is used where the options ask for redaction. Trajectories of a
    `heldout` task (an environment's evaluation tasks) go to `heldout_split`, never to train."""
    if format not in TRAINING_FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(TRAINING_FORMATS)}")
    allowed = {"filter", "eval_fraction", "redact", *_OPTIONS.get(format, ())}
    opts = dict(spec_options) if isinstance(spec_options, Mapping) else \
        {k: getattr(spec_options, k) for k in allowed if hasattr(spec_options, k)}
    if unknown := sorted(set(opts) - allowed):
        raise ValueError(f"unknown {format} options {unknown}; allowed: {sorted(allowed)}")
    common = {"filter_expr": opts.pop("filter", "") or "", "eval_fraction": opts.pop("eval_fraction", 0.2),
              "redact": (redactor or True) if opts.pop("redact", True) else False}
    if heldout:
        common["eval_fraction"] = SplitRule(common["eval_fraction"], frozenset(heldout), heldout_split)
    if format == "dpo":
        return dpo_pairs(joined, preferences, **common, **opts)
    return {"sft": curate, "kto": kto_rows, "rl": rl_rows}[format](joined, **common, **opts)


def with_row_key(format: str, df: pl.DataFrame) -> pl.DataFrame:
    """`pipeline.corpus.store.snapshot` keys rows by `trajectory_id`; a DPO row is keyed by its pair and an RL
    row by its task, so that key is copied into a `trajectory_id` column (export leaves it out)."""
    return df if "trajectory_id" in df.columns else df.with_columns(pl.col(ROW_KEY[format]).alias("trajectory_id"))
