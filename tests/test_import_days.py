"""Issue 15 item 5: a file without timestamps lands on the day it is imported, and a re-import on a
later day keeps that first day (the lake dedupes by id within a day only), outcomes included."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.capture.importers import api, import_paths
from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace

FIX = Path(os.environ.get("TRACEMILL_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "realworld")
TAU = FIX / "tau_bench" / "gpt-4o-airline.subset5.json"


def landed_days(ws: Workspace, kind: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in read_landed(ws.landing, kind):
        out.setdefault(Path(line.source).parent.name, set()).add(
            line.record["trajectory_id"] if kind == "trajectory" else line.record["outcome_id"])
    return out


@pytest.mark.skipif(not TAU.exists(), reason="tau_bench fixture missing")
def test_timeless_file_stays_on_its_first_import_day(tmp_path, monkeypatch):
    ws = Workspace.open("t", tmp_path)
    monkeypatch.setattr(api, "import_day", lambda: datetime(2026, 11, 20, tzinfo=UTC))
    first = import_paths([TAU], ws, progress=False)
    assert first.timeless == {"2026-11-20": first.trajectories} and first.trajectories > 0
    monkeypatch.setattr(api, "import_day", lambda: datetime(2026, 11, 23, tzinfo=UTC))
    again = import_paths([TAU], ws, progress=False)
    assert again.timeless == {"2026-11-20": first.trajectories}
    ws.close()
    assert list(landed_days(ws, "trajectory")) == ["2026-11-20"]
    outcomes = landed_days(ws, "outcome")
    assert list(outcomes) == ["2026-11-20"] and len(outcomes["2026-11-20"]) == first.outcomes  # same ids twice
    placed = import_paths([TAU], ws, progress=False, default_time=datetime(2026, 12, 1, tzinfo=UTC))
    assert placed.timeless == {"2026-12-01": first.trajectories}  # an explicit --default-time still overrides
