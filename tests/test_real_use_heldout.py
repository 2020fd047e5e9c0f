"""Issue 14 item 5: online-eval rollouts of held-out tasks captured into the source workspace must never
reach a train split. Before the fix, curation split them by task-id hash and ~80% landed in train."""

from __future__ import annotations

import polars as pl

from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec
from pipeline.corpus import stages
from pipeline.corpus.heldout import heldout_ids, recorded_heldout
from pipeline.corpus.rows import build_rows
from pipeline.demo.agents import policy_for, populate
from pipeline.environment import DEFAULT_ENVIRONMENT
from pipeline.evaluate.online import online_eval
from pipeline.lake.stages import read_joined, refresh_lake

N_HELDOUT = 40


def _world(home) -> tuple[Workspace, list[str]]:
    """A demo workspace with normal traffic plus a scripted agent's online-eval rollouts on held-out tasks."""
    ws = Workspace.open("shop", home=home)
    populate(ws, days=["2026-11-16"], per_day=12, seed=1)
    rep = online_eval(None, seed=1000, n_tasks=N_HELDOUT, policy_factory=lambda task: policy_for("careful", task),
                      agent="ckpt:sft@demo", workspace=ws, tag="nightly", environment=DEFAULT_ENVIRONMENT)
    ws.close()
    refresh_lake(ws)
    return ws, [t["task_id"] for t in rep["tasks"]]


def test_todays_leak_is_reproduced_and_closed(home, tiny_model_dir):
    ws, heldout = _world(home)
    joined = read_joined(ws)
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft")
    assert set(recorded_heldout(ws)[DEFAULT_ENVIRONMENT]) == set(heldout) == heldout_ids(ws, spec)

    # the old curation: split by hash only → most held-out tasks' successful rollouts are train rows
    leaky, _ = build_rows("sft", joined, None, spec)
    leaked = leaky.filter(pl.col("task_id").is_in(heldout))
    share = (leaked["split"] == "train").mean()
    print(f"\nheld-out rollouts in train before the fix: {share:.0%} of {leaked.height}")
    assert leaked.height == N_HELDOUT and share > 0.6

    # the old corpus fails the blocking check once the held-out ids are known
    root, models = f"file://{home / 'corpora'}", home / "models"
    stages.lake.write_parquet(leaky, ws.curated_path("sft"))
    stages.snapshot_corpus(ws, spec, root, str(tiny_model_dir), models)
    check = stages.check_corpus(spec, root, heldout_ids(ws, spec))
    assert not check.passed and check.heldout_tasks_in_train == int((leaked["split"] == "train").sum())

    # curation now sends them to eval; the new snapshot passes
    df, stats = stages.curate_corpus(ws, spec)
    assert df.filter(pl.col("task_id").is_in(heldout))["split"].unique().to_list() == ["eval"]
    stages.snapshot_corpus(ws, spec, root, str(tiny_model_dir), models)
    fixed = stages.check_corpus(spec, root, heldout_ids(ws, spec))
    assert fixed.passed and fixed.heldout_tasks_in_train == 0 and fixed.train_rows > 0

    # or drops them, counted by reason
    dropped, stats = stages.curate_corpus(ws, spec.model_copy(update={"heldout": "drop"}))
    assert not dropped.filter(pl.col("task_id").is_in(heldout)).height
    assert stats.dropped["heldout_task"] == N_HELDOUT and dropped.height == df.height - N_HELDOUT


def test_a_spec_with_an_environment_holds_its_tasks_out_before_any_evaluation(home):
    ws = Workspace.open("fresh", home=home)
    spec = CorpusSpec(name="sft", target="deeplake://local/sft", environment=DEFAULT_ENVIRONMENT,
                      online={"n_tasks": 5, "seed": 1000})
    assert len(heldout_ids(ws, spec)) == 5 and not recorded_heldout(ws)
