"""The one Definitions object: every stage of the loop as software-defined assets in one lineage graph."""

from __future__ import annotations

import dagster as dg

from assets.corpora import build_all
from assets.ingest import build_ingest_assets, day_partitions
from assets.resources import resources_for_env
from pipeline.config import TracemillConfig, load_config


def build_definitions(cfg: TracemillConfig) -> dg.Definitions:
    partitions = day_partitions(cfg.partitions_start)
    ingest = build_ingest_assets(partitions)
    joined = next(a for a in ingest if isinstance(a, dg.AssetsDefinition) and a.key.path == ["joined_trajectories"])
    items = ingest + build_all(cfg, joined)
    assets = [a for a in items if isinstance(a, dg.AssetsDefinition) and not a.is_asset_check]
    checks = [a for a in items if isinstance(a, dg.AssetChecksDefinition)]
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
    ]
    return dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs,
                          resources=resources_for_env(cfg.workspace, cfg.base_model))


defs = build_definitions(load_config())
