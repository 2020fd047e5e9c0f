"""The one Definitions object: every stage of the loop as software-defined assets in one lineage graph."""


import dagster as dg

from assets import observe
from assets.corpora import build_all
from assets.ingest import build_ingest_assets, day_partitions
from assets.resources import executor_for, resources_for_env
from assets.schedules import build_schedules
from assets.sensors import automation_sensor, build_late_outcome_sensor
from pipeline.config import TracemillConfig, load_config


def build_assets(cfg: TracemillConfig) -> tuple[list, list]:
    """(assets, asset checks) for a config: the capture stage plus one chain per corpus spec."""
    ingest = build_ingest_assets(day_partitions(cfg.partitions_start))
    checks = [a for a in ingest if isinstance(a, dg.AssetChecksDefinition)]
    assets = [a for a in ingest if a not in checks]
    joined = next(a for a in assets if a.key.path == ["joined_trajectories"])
    for item in build_all(cfg, joined):
        (checks if isinstance(item, dg.AssetChecksDefinition) else assets).append(item)
    return assets, checks


def build_definitions(cfg: TracemillConfig) -> dg.Definitions:
    partitions = day_partitions(cfg.partitions_start)
    assets, checks = build_assets(cfg)
    downstream = dg.AssetSelection.assets(*[a for a in assets if not a.partitions_def])
    names = [s.name for s in cfg.corpora]
    jobs = [
        dg.define_asset_job("ingest_daily", partitions_def=partitions,
                            selection=["raw_trajectories", "outcomes", "joined_trajectories"]),
        dg.define_asset_job("corpus_refresh", selection=dg.AssetSelection.assets(
            "base_model", *[f"curated_{n}" for n in names], *[f"corpus_{n}" for n in names])),
        dg.define_asset_job("train_and_eval", selection=dg.AssetSelection.assets(
            *[f"checkpoint_{n}" for n in names], *[f"eval_{n}" for n in names])),
        dg.define_asset_job("downstream_all", selection=downstream),
        dg.define_asset_job("rejoin_daily", partitions_def=partitions,
                            selection=["outcomes", "joined_trajectories"]),
    ]
    sensors = [build_late_outcome_sensor(jobs[-1]), automation_sensor()]
    _, profile = cfg.profile()
    observe.install()
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, sensors=sensors,
                          schedules=build_schedules(jobs, cfg), executor=executor_for(profile),
                          resources=resources_for_env(cfg.workspace, cfg.base_model, profile))


defs = build_definitions(load_config())
