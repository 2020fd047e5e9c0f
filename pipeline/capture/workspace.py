"""Workspaces: one folder per workspace under `$TRACEMILL_HOME` holding landing, lake and quarantine.

`Workspace.open("ft-live")` is the entry point of the capture SDK in local mode; the same object
tells the pipeline stages where each layer of data lives, so paths are defined in exactly one place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from pipeline import storage
from pipeline.capture import fast_validate
from pipeline.capture.landing import LandingWriter, landed_days
from pipeline.capture.recorder import CaptureMethods
from pipeline.schema import Outcome, Preference, Trajectory, utcnow
from pipeline.settings import environment

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # always fullmatch: `$` would admit "wa\n"


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """The tracemill home: explicit argument, else `$TRACEMILL_HOME`, else `./.tracemill` (pipeline.settings)."""
    return environment(home=home).home


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"workspace name {name!r} is invalid: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'ft-live')"
        )
    return name


class WorkspaceNotFound(LookupError):
    pass


class Workspace(CaptureMethods):
    """A named capture space. Thread-safe for writes; each process writes its own landing segments.

    Data lives under `<home>/workspaces/<name>` by default, or under a URL given as `data_root` or
    `$TRACEMILL_DATA_ROOT` (`s3://bucket/prefix`: the team profile), see `pipeline.storage`."""

    def __init__(self, name: str, home: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None):
        self.name = check_name(name)
        self.home = home_dir(home)
        self.data_root = storage.data_root(self.home, data_root)
        self.root = self.data_root / name
        self._writer: LandingWriter | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, home: str | os.PathLike | None = None, description: str = "",
               exist_ok: bool = False, data_root: str | os.PathLike | None = None) -> Workspace:
        ws = cls(name, home, data_root)
        if ws.exists():
            if exist_ok:
                return ws
            raise FileExistsError(f"workspace {name!r} already exists at {ws.root}")
        for sub in ("landing", "lake", "quarantine"):
            (ws.root / sub).mkdir(parents=True, exist_ok=True)
        info = {"name": name, "description": description, "created_at": utcnow().isoformat()}
        (ws.root / "workspace.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        return ws

    @classmethod
    def open(cls, name: str, home: str | os.PathLike | None = None, create: bool = True,
             data_root: str | os.PathLike | None = None) -> Workspace:
        """Open a workspace, creating it on first use unless `create=False`."""
        ws = cls(name, home, data_root)
        if not ws.exists():
            if not create:
                raise WorkspaceNotFound(
                    f"workspace {name!r} does not exist under {ws.home}: "
                    f"create it with `tracemill workspace create {name}`"
                )
            return cls.create(name, home, exist_ok=True, data_root=data_root)
        return ws

    @classmethod
    def list(cls, home: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None) -> list[str]:
        base = storage.data_root(home_dir(home), data_root)
        return sorted(p.name for p in base.iterdir() if (p / "workspace.json").exists()) if base.exists() else []

    def exists(self) -> bool:
        return (self.root / "workspace.json").exists()

    def info(self) -> dict[str, Any]:
        return orjson.loads((self.root / "workspace.json").read_bytes())

    def delete(self) -> None:
        self.close()
        storage.remove_tree(self.root)
        if storage.is_remote(self.root):
            storage.remove_tree(self.open_dir)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- paths -----------------------------------------------------------------------------
    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def open_dir(self) -> Path:
        """Trajectories being streamed to the server, message by message, before they close. They are
        appended to line by line, which object storage cannot do: with a remote data root they stay on
        the capture server's local disk until they close and land."""
        if storage.is_remote(self.root):
            return self.home / "open" / self.name
        return self.root / "open"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def raw_path(self, day: str) -> Path:
        return self.lake / "trajectories" / f"{day}.parquet"

    def joined_path(self, day: str) -> Path:
        return self.lake / "joined" / f"{day}.parquet"

    @property
    def outcomes_path(self) -> Path:
        return self.lake / "outcomes.parquet"

    @property
    def preferences_path(self) -> Path:
        return self.lake / "preferences.parquet"

    def curated_path(self, corpus: str) -> Path:
        return self.root / "curated" / f"{corpus}.parquet"

    def quarantine_path(self, kind: str, day: str) -> Path:
        return self.quarantine / kind / f"{day}.ndjson"

    def days(self, kind: str = "trajectory") -> list[str]:
        return landed_days(self.landing, kind)

    # ---- writes (local mode of the capture SDK) ---------------------------------------------
    @property
    def writer(self) -> LandingWriter:
        if self._writer is None:
            self._writer = LandingWriter(self.landing)
        return self._writer

    def write_trajectories(self, trajectories: Iterable[Trajectory | dict[str, Any]]) -> int:
        """Validate and durably append trajectories, one fsync per day touched. All or nothing: a bad
        record raises ValueError naming its field path and nothing of the call is written. Dicts go
        through the msgspec fast path (pydantic as the fallback and the final word)."""
        return fast_validate.write_trajectories(self, trajectories)

    def write_outcomes(self, outcomes: Iterable[Outcome | dict[str, Any]]) -> int:
        """Outcomes land under the day they were *recorded*: that is what lets a sensor see late ones.
        Validated like trajectories (and like the capture server does), all or nothing."""
        return fast_validate.write_records(self, "outcome", outcomes)

    def write_preferences(self, preferences: Iterable[Preference | dict[str, Any]]) -> int:
        return fast_validate.write_records(self, "preference", preferences)

