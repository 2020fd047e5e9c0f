"""Where Dagster finds tracemill: the Definitions module, and the local instance's
`$DAGSTER_HOME/dagster.yaml`, written from the settings this package ships.

Why package data and not the repository's file: a wheel install has no source checkout to copy from,
and the instance settings (pools, run limits, the `tracemill` logger in run logs) are the same either way.
Nothing here imports Dagster, so the launchers that only prepare the instance stay fast.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from pipeline.capture.workspace import home_dir

DEFINITIONS_MODULE = "assets.definitions"  # the code location: `dagster dev -m`, `dagster job backfill -m`
INSTANCE_SETTINGS = "dagster.yaml"  # package data of `assets`, next to this module


def instance_settings() -> str:
    """The shipped `dagster.yaml` (sqlite storage under `$DAGSTER_HOME`, pools, run limits)."""
    return resources.files("assets").joinpath(INSTANCE_SETTINGS).read_text()


def dagster_home_for(home: str | os.PathLike | None = None) -> Path:
    """`$DAGSTER_HOME`, else `<tracemill home>/dagster` (the Makefile's default too)."""
    return Path(os.environ.get("DAGSTER_HOME") or home_dir(home) / "dagster").resolve()


def ensure_dagster_home(dagster_home: Path) -> Path:
    """A Dagster instance needs `$DAGSTER_HOME/dagster.yaml`: write the shipped one unless one is there
    (a team's Postgres settings, docs/dagster.team.yaml, are never overwritten)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if not target.exists():
        target.write_text(instance_settings())
    return dagster_home


if __name__ == "__main__":  # `python -m assets.instance`: what `make setup` runs
    print(ensure_dagster_home(dagster_home_for()) / "dagster.yaml")
