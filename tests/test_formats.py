"""Training formats from one joined frame: DPO pairs, KTO labels, RL prompts, stable splits, token masks."""

from __future__ import annotations

import orjson
import polars as pl
import pytest

from pipeline.capture.workspace import Workspace
from pipeline.chat import tokenize_conversation, tokenize_prompt
from pipeline.chat.tracemill import ASSISTANT, render_assistant_body
from pipeline.corpus.curate import curate, split_of
from pipeline.corpus.rows import TRAINING_FORMATS as FORMATS
from pipeline.corpus.rows import build_rows, dpo_pairs, kto_rows, prompt_and_completion, rl_rows
from pipeline.corpus.tokenize import tokenize_format_rows
from pipeline.demo.agents import populate
from pipeline.demo.rewards import parse_ground_truth
from pipeline.demo.world import Task
from pipeline.lake import ingest as lake
from pipeline.lake.ingest import PREFERENCE_SCHEMA
from pipeline.lake.join import join_outcomes


def joined_world(home) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A populated demo workspace run through the lake: (joined trajectories, preferences)."""
    ws = Workspace.open("demo", home=home)
    populate(ws, days=["2026-11-16", "2026-11-17"], per_day=30, seed=3, late_fraction=0.2)
    outcomes, _ = lake.ingest_outcomes(ws)
    prefs, _ = lake.ingest_preferences(ws)
    trajectories = pl.concat([lake.ingest_trajectories(ws, day)[0] for day in ws.days()])
    return join_outcomes(trajectories, outcomes), prefs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return joined_world(tmp_path_factory.mktemp("home"))


def messages_of(joined: pl.DataFrame, tid: str) -> list[dict]:
    return orjson.loads(joined.filter(pl.col("trajectory_id") == tid)["messages_json"].item())


def prefs_frame(rows: list[tuple[str, str, str | None]]) -> pl.DataFrame:
    from datetime import UTC, datetime

    return pl.DataFrame([{"preference_id": f"x{i}", "chosen": c, "rejected": r, "task_id": t, "source": "human",
                          "recorded_at": datetime(2026, 11, 20, tzinfo=UTC), "received_ns": i}
                         for i, (c, r, t) in enumerate(rows)], schema=PREFERENCE_SCHEMA)


def test_prompt_and_completion_cuts_after_the_first_user_message():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "name": "f", "arguments": "{}"}]},
            {"role": "tool", "tool_call_id": "1", "content": "r"}, {"role": "assistant", "content": "a"}]
    prompt, completion = prompt_and_completion(msgs)
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert [m["role"] for m in completion] == ["assistant", "tool", "assistant"]
    with pytest.raises(ValueError):
        prompt_and_completion([{"role": "system", "content": "s"}])


def test_dpo_outcome_pairs_stay_within_a_task_and_prefer_the_higher_reward(world):
    joined, _ = world
    pairs, stats = dpo_pairs(joined, None)
    assert pairs.height > 5 and set(pairs["source"]) == {"outcome"}
    task_of = dict(joined.select("trajectory_id", "task_id").iter_rows())
    for p in pairs.iter_rows(named=True):
        assert p["chosen_id"] != p["rejected_id"]
        assert task_of[p["chosen_id"]] == task_of[p["rejected_id"]] == p["task_id"]
        assert p["chosen_reward"] - p["rejected_reward"] >= 0.5
        chosen_prompt, chosen_completion = prompt_and_completion(messages_of(joined, p["chosen_id"]))
        assert orjson.loads(p["prompt"]) == chosen_prompt == prompt_and_completion(
            messages_of(joined, p["rejected_id"]))[0]
        assert orjson.loads(p["chosen"]) == chosen_completion
    assert pairs["pair_id"].n_unique() == pairs.height
    again, _ = dpo_pairs(joined, None)
    assert again.equals(pairs)  # deterministic, order included
    capped, capped_stats = dpo_pairs(joined, None, max_pairs_per_task=1)
    assert capped.group_by("task_id").len()["len"].max() == 1
    assert capped_stats.dropped["over_max_pairs_per_task"] == pairs.height - capped.height > 0
    with pytest.raises(ValueError):
        dpo_pairs(joined, None, min_margin=0)  # would allow self-pairs and ties


def test_explicit_preferences_are_kept_and_bad_ones_dropped_with_reasons(world):
    joined, prefs = world
    kept, _ = kto_rows(joined.with_columns(pl.col("reward").fill_null(0.0)))  # attempts that survive cleaning
    by_task = kept.group_by("task_id", maintain_order=True).agg("trajectory_id").filter(
        pl.col("trajectory_id").list.len() >= 2)
    (_, (a1, a2, *_)), (_, (b1, *_)) = by_task.rows()[:2]
    lone = joined.filter(pl.col("trajectory_id") == a1).with_columns(
        pl.lit("odd-prompt").alias("trajectory_id"),
        pl.col("messages_json").str.replace("Use the tools", "Use tools"))
    broken = joined.filter(pl.col("trajectory_id") == a2).with_columns(
        pl.lit("no-answer").alias("trajectory_id"), pl.lit(orjson.dumps(
            [{"role": "user", "content": "How much?"}]).decode()).alias("messages_json"))
    data = pl.concat([joined, lone, broken])
    bad = prefs_frame([("missing", a1, None), (a1, a1, None), (a1, b1, None), (a1, "odd-prompt", None),
                       (a1, "no-answer", None), (a2, a1, "t-other")])
    pairs, stats = dpo_pairs(data, pl.concat([prefs, bad]))
    explicit = pairs.filter(pl.col("source") == "preference")
    assert sorted(explicit.select("chosen_id", "rejected_id").rows()) == sorted(
        prefs.select("chosen", "rejected").rows())
    assert {k: v for k, v in stats.dropped.items() if k.startswith("preference_")} == {
        "preference_chosen_not_found": 1, "preference_same_trajectory": 1, "preference_different_task": 2,
        "preference_different_prompt": 1, "preference_rejected_no_assistant_turn": 1}
    assert stats.sources["preference"] == prefs.height
    # a human judgement replaces the outcome pair over the same two trajectories, never both directions
    unordered = [frozenset(r) for r in pairs.select("chosen_id", "rejected_id").rows()]
    assert len(unordered) == len(set(unordered))
    assert stats.dropped["outcome_pair_has_preference"] >= 1


def test_kto_labels_follow_the_reward_threshold_and_skip_unrewarded(world):
    joined, _ = world
    rows, stats = kto_rows(joined)
    reward = dict(joined.select("trajectory_id", "reward").iter_rows())
    assert all(reward[t] is not None for t in rows["trajectory_id"])
    assert rows["label"].to_list() == [reward[t] >= 0.5 for t in rows["trajectory_id"]]
    assert stats.dropped["no_reward"] > 0 and rows["label"].any() and not rows["label"].all()
    strict, _ = kto_rows(joined, threshold=1.01)
    assert not strict["label"].any()
    first = rows.row(0, named=True)
    prompt, completion = prompt_and_completion(messages_of(joined, first["trajectory_id"]))
    assert (orjson.loads(first["prompt"]), orjson.loads(first["completion"])) == (prompt, completion)


def test_rl_has_one_prompt_per_task_with_ground_truth(world):
    joined, _ = world
    rows, stats = rl_rows(joined)
    assert rows["task_id"].n_unique() == rows.height == joined["task_id"].n_unique()
    for r in rows.iter_rows(named=True):
        assert [m["role"] for m in orjson.loads(r["prompt"])] == ["system", "user"]
        task = Task.from_dict(orjson.loads(r["ground_truth"]))
        assert task.task_id == r["task_id"] and task.question in r["prompt"]
    assert stats.sources["metadata_task"] == rows.height
    # without task metadata: the best attempt's final answer, only where some attempt succeeded
    answers = {t: Task.from_dict(orjson.loads(m)["task"]).answer
               for t, m in joined.select("task_id", "metadata_json").iter_rows()}
    bare, bare_stats = rl_rows(joined.with_columns(pl.lit("{}").alias("metadata_json")))
    kto, _ = kto_rows(joined)
    solved = set(kto.filter(pl.col("label"))["task_id"])
    assert set(bare["task_id"]) == solved and bare_stats.dropped["no_ground_truth"] == rows.height - len(solved)
    for task_id, truth in bare.select("task_id", "ground_truth").iter_rows():
        assert abs(parse_ground_truth(truth)[1] - answers[task_id]) < 0.011


def test_splits_are_stable_by_task_across_runs_and_formats(world):
    joined, prefs = world
    sft, _ = curate(joined)
    seen: dict[str, str] = {}
    for fmt in FORMATS:
        for _ in range(2):
            rows, _ = build_rows(fmt, joined, prefs, {"eval_fraction": 0.3})
            for task_id, split in rows.select("task_id", "split").iter_rows():
                assert split == seen.setdefault(task_id, split) == split_of(task_id, 0.3)
    assert {"train", "eval"} <= set(seen.values())
    assert set(sft["task_id"]) <= set(seen)


def test_build_rows_dispatches_and_rejects_unknown_options(world):
    joined, prefs = world
    sft, stats = build_rows("sft", joined, None, {"filter": "reward > 0"})
    assert sft.equals(curate(joined, filter_expr="reward > 0")[0]) and stats.after_filter < joined.height
    dpo, _ = build_rows("dpo", joined, prefs, {"min_margin": 0.5, "max_pairs_per_task": 2})
    assert dpo.filter(pl.col("source") == "outcome").group_by("task_id").len()["len"].max() == 2
    with pytest.raises(ValueError, match="threshold"):
        build_rows("dpo", joined, prefs, {"threshold": 0.5})
    with pytest.raises(ValueError):
        build_rows("ppo", joined, prefs, {})


def test_token_masks_cover_exactly_the_assistant_tokens_of_the_completion(world, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    joined, prefs = world
    header = tok(ASSISTANT, add_special_tokens=False)["input_ids"]
    for fmt, sides in (("dpo", ("chosen", "rejected")), ("kto", ("completion",)), ("rl", ())):
        rows, _ = build_rows(fmt, joined.head(24), prefs, {})
        out, dropped = tokenize_format_rows(fmt, rows, tok, max_length=2048)
        assert dropped == 0 and out.height == rows.height and out["trajectory_id"].n_unique() == out.height
        for r in out.iter_rows(named=True):
            prompt, tools = orjson.loads(r["prompt"]), orjson.loads(r["tools"])
            assert r["prompt_ids"] == tokenize_prompt(tok, prompt, tools)
            assert r["prompt_ids"][-len(header):] == header
            for side in sides:
                completion = orjson.loads(r[side])
                ids, mask = r[f"{side}_ids"], r[f"{side}_mask"]
                full, _ = tokenize_conversation(tok, prompt + completion, tools)
                assert r["prompt_ids"] + ids == full
                bodies = [t for m in completion if m["role"] == "assistant"
                          for t in tok(render_assistant_body(m), add_special_tokens=False)["input_ids"]]
                assert [i for i, keep in zip(ids, mask, strict=True) if keep] == bodies
                context = tok.decode([i for i, keep in zip(ids, mask, strict=True) if not keep])
                assert all(m["content"] in context for m in completion if m["role"] == "tool")
            assert r["n_tokens"] == len(r["prompt_ids"]) + max([len(r[f"{s}_ids"]) for s in sides] or [0])
    rows, _ = build_rows("kto", joined.head(6), None, {})
    shortest = min(len(tokenize_prompt(tok, orjson.loads(p), orjson.loads(t)))
                   for p, t in rows.select("prompt", "tools").rows())
    short, dropped = tokenize_format_rows("kto", rows, tok, max_length=shortest)  # prompts end on the header
    assert short.height == 0 and dropped == rows.height  # nothing trainable left after truncation
