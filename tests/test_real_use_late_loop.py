"""Issue 12, item 1: a late outcome re-curates by itself even though most day partitions were never
materialized. Real assets on a temp home, a real Dagster instance, and Dagster's own evaluator of
automation conditions (the one the automation sensor runs on every tick)."""

from collections.abc import Callable

import dagster as dg

from assets.definitions import build_assets
from assets.resources import local_resources
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, TracemillConfig
from pipeline.demo.agents import populate
from pipeline.lake.late import trajectory_days

DAYS = ["2026-11-16", "2026-11-17"]
INGEST = ["raw_trajectories", "outcomes", "joined_trajectories"]
CORPUS = ["base_model", "curated_sft", "corpus_sft"]


def _config(base_model: str) -> TracemillConfig:
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft")
    return TracemillConfig(workspace="demo", base_model=base_model, partitions_start="2026-11-01", corpora=[spec])


def _requested(result: dg.EvaluateAutomationConditionsResult) -> set[str]:
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}


def _graph(cfg: TracemillConfig, home) -> tuple[list, dg.Definitions, dg.DagsterInstance, Callable[..., None]]:
    """The real asset graph of `cfg` on a temp home, an ephemeral instance, and `materialize(select, day)`."""
    assets, checks = build_assets(cfg)
    defs = dg.Definitions(assets=assets, asset_checks=checks, resources=local_resources(
        cfg.workspace, home=str(home), base_model=cfg.base_model))
    instance = dg.DagsterInstance.ephemeral()

    def materialize(select: list[str], day: str | None = None) -> None:
        assert dg.materialize([*assets, *checks], selection=select, partition_key=day, instance=instance,
                              resources=defs.resources).success

    return assets, defs, instance, materialize


def test_a_rejoined_day_recurates_although_most_days_are_missing(home, tiny_model_dir):
    ws = Workspace.open("demo", home=home)
    stats = populate(ws, days=DAYS, per_day=8, seed=3, late_fraction=0.5)
    cfg = _config(str(tiny_model_dir))
    assets, defs, instance, materialize = _graph(cfg, home)

    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # before anything landed
    assert _requested(tick) == set()
    for day in DAYS:
        materialize(INGEST, day)
    joined = dg.AssetKey("joined_trajectories")
    partitions = assets[[a.key for a in assets].index(joined)].partitions_def.get_partition_keys()
    assert len(partitions) - len(DAYS) >= 30  # most days since partitions_start were never materialized

    # the first join: the model, the curated table and the corpus follow without a manual step
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick) == set(CORPUS)
    materialize(CORPUS)  # what the automation sensor's run does
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick) == set()  # nothing changed: nothing requested (no loop)

    # late outcomes for one day → the late_outcomes sensor's re-join of that day → re-curate
    day_of = trajectory_days(ws)
    late = [o for o in stats.late_outcomes if day_of.get(o.trajectory_id) == DAYS[0]]
    assert late and ws.write_outcomes(late) == len(late)
    materialize(["outcomes", "joined_trajectories"], DAYS[0])
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick) == {"curated_sft", "corpus_sft"}  # the model is built once; training is nightly
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(tick) == set()  # requested once, not on every tick


def test_a_spec_that_retrains_on_new_versions_trains_and_evaluates_by_itself(home, tiny_model_dir):
    """`retrain: on_new_version`: a new corpus version requests the checkpoint, and the checkpoint the eval,
    with no manual step; the default spec (above) leaves both to the nightly retrain."""
    ws = Workspace.open("demo", home=home)
    populate(ws, days=DAYS[:1], per_day=8, seed=3)
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft", retrain="on_new_version")
    cfg = TracemillConfig(workspace="demo", base_model=str(tiny_model_dir), partitions_start="2026-11-01",
                          corpora=[spec])
    assets, defs, instance, materialize = _graph(cfg, home)

    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the sensor's first tick
    materialize(INGEST, DAYS[0])
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    # one tick plans the whole chain: the corpus, then its checkpoint and eval in the same run
    assert _requested(tick) == {*CORPUS, "checkpoint_sft", "eval_sft"}
