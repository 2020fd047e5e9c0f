"""The day each timeless trajectory was first imported into a workspace, so re-imports stay on it.

A trajectory without timestamps starts on its import day (see `base`). The lake dedupes by
trajectory id within a day partition only, so the same file imported again on a later day would
otherwise land a second copy in another partition. This index remembers `trajectory_id → day` per
workspace (an append-only NDJSON file, fsynced before the trajectories it places are written, so a
crash can only leave an entry without its trajectory, which the next import reuses) and moves a
re-imported trajectory, and the outcomes derived from its start time, back to the first day.

The file's mtime was the alternative: stateless, but it moves when the file is appended to or
copied, and an archive's old mtimes fall outside every partition, which is the problem being fixed.
With an object-store data root the index lives on the importing machine
(`<home>/import_days/<workspace>.ndjson`), since objects cannot be appended to.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.schema import Outcome, Trajectory
from pipeline.storage import is_remote


def index_path(ws: Any) -> Path:
    if is_remote(ws.root):
        return Path(ws.home) / "import_days" / f"{ws.name}.ndjson"
    return Path(ws.root) / "import_days.ndjson"


class ImportDays:
    """Places timeless trajectories of one import (default start `today`) on their first import day."""

    def __init__(self, path: Path, today: datetime):
        self.path, self.today = path, today
        self._days: dict[str, str] | None = None
        self._new: dict[str, str] = {}
        self.moved: dict[str, datetime] = {}  # trajectory id → the start it was moved to

    @property
    def days(self) -> dict[str, str]:
        if self._days is None:
            self._days = {}
            if self.path.exists():
                for line in self.path.read_bytes().splitlines():
                    try:
                        rec = orjson.loads(line)
                    except orjson.JSONDecodeError:  # a torn last line after a crash: that entry is redone
                        continue
                    self._days.setdefault(rec["id"], rec["day"])
        return self._days

    def place(self, traj: Trajectory) -> Trajectory:
        """The trajectory, moved to its first import day when it has no time of its own."""
        if traj.metadata.get("time_source") != "default" or traj.started_at != self.today:
            return traj  # timed by the source, or placed by an explicit --default-time
        tid = traj.trajectory_id
        day = self.days.get(tid)
        if day is None:
            day = self.days[tid] = self._new[tid] = self.today.date().isoformat()
        if day == self.today.date().isoformat():
            return traj
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        self.moved[tid] = start
        return traj.model_copy(update={"started_at": start})

    def place_outcome(self, out: Outcome) -> Outcome:
        """An outcome stamped with its moved trajectory's start moves with it (same content, same id)."""
        start = self.moved.get(out.trajectory_id)
        if start is None or out.recorded_at != self.today:
            return out
        data = out.model_dump()
        derived = Outcome.model_validate({**data, "outcome_id": ""}).outcome_id == out.outcome_id
        return Outcome.model_validate({**data, "recorded_at": start, "outcome_id": "" if derived else out.outcome_id})

    def save(self) -> None:
        """Append the new entries durably; called before the trajectories they place are written."""
        if not self._new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(orjson.dumps({"id": k, "day": v}) + b"\n" for k, v in self._new.items())
        with open(self.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._new.clear()
