"""Incremental outcome ingest: only lines landed since the table's cursor are validated, and the table
(and the quarantine) always equal what a full rebuild of the landing area gives."""

import os
from datetime import UTC, datetime, timedelta

import orjson
import polars as pl

from pipeline import storage
from pipeline.capture.landing import LandingWriter
from pipeline.capture.workspace import Workspace
from pipeline.lake import incremental
from pipeline.lake import ingest as lake

T0 = datetime(2026, 11, 16, 9, tzinfo=UTC)


def _outcomes(ids, value=1.0, days=3):
    return [{"outcome_id": f"o{i}", "trajectory_id": f"t{i % 7}", "name": "reward", "value": value + i,
             "recorded_at": T0 + timedelta(days=i % days, minutes=i)} for i in ids]


def _bad(n, tag):
    """Records the landing accepts as JSON but the ingest quarantines (no value and no label)."""
    return [{"trajectory_id": f"{tag}{i}", "name": "reward", "recorded_at": T0.isoformat()} for i in range(n)]


def _segment(ws, day="2026-11-16"):
    return ws.writer.path_for("outcome", day)


def _rebuilt(ws):
    """(table, quarantine) of a full rebuild; leaves the workspace rebuilt."""
    df, _ = lake.ingest_outcomes(ws, full=True)
    return df, incremental_quarantine(ws)


def incremental_quarantine(ws):
    path = ws.quarantine_path("outcome", "all")
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def test_rounds_of_incremental_ingest_equal_a_full_rebuild(tmp_path):
    ws = Workspace.create("w", tmp_path)
    other = LandingWriter(ws.landing, writer_id="a-second-writer")  # its segments sort first
    lake.ingest_outcomes(ws)  # nothing landed yet: an empty table with a cursor
    for r in range(4):
        fresh = _outcomes(range(r * 50, r * 50 + 50))
        resent = _outcomes(range(r * 10, r * 10 + 5), value=100.0 * (r + 1))  # corrections of older ids
        ws.write_outcomes(fresh)
        other.append("outcome", "2026-11-17", [{**o, "recorded_at": o["recorded_at"].isoformat()} for o in resent])
        df, stats = lake.ingest_outcomes(ws)
        assert (stats.lines, stats.valid) == (55, 55)  # (b) only the new lines were read and validated
        assert df.height == (r + 1) * 50 and stats.duplicates == 5
    assert lake.read_outcomes(ws).equals(df)
    same, stats = lake.ingest_outcomes(ws)  # nothing new: the table is returned, not rewritten
    assert stats.lines == 0 and same.equals(df)
    full, _ = _rebuilt(ws)
    assert full.equals(df)  # (a) same rows, same latest values, same order, same received_ns
    assert df.filter(pl.col("outcome_id") == "o30")["value"].item() == 430.0  # round 3 re-sent it
    other.close()


def test_resent_outcome_with_newer_value_replaces_the_old_one(tmp_path):
    ws = Workspace.create("w", tmp_path)
    ws.write_outcomes(_outcomes([1, 2], value=0.0))
    first, _ = lake.ingest_outcomes(ws)
    assert first.filter(pl.col("outcome_id") == "o1")["value"].item() == 1.0
    ws.write_outcomes([{**_outcomes([1])[0], "value": 9.0, "label": "regraded"}])
    df, stats = lake.ingest_outcomes(ws)  # (c)
    assert (stats.lines, stats.duplicates, df.height) == (1, 1, 2)
    row = df.filter(pl.col("outcome_id") == "o1").row(0, named=True)
    assert (row["value"], row["label"]) == (9.0, "regraded")
    assert row["received_ns"] > first.filter(pl.col("outcome_id") == "o1")["received_ns"].item()
    assert _rebuilt(ws)[0].equals(df)


def test_quarantine_accumulates_and_matches_a_full_rebuild(tmp_path):
    ws = Workspace.create("w", tmp_path)
    ws.write_outcomes(_outcomes(range(5)))
    ws.writer.append("outcome", "2026-11-16", _bad(2, "x"))
    with open(_segment(ws), "ab") as fh:
        fh.write(b"not json\n" + b'{"t":1,"r":{"trajectory_id":"torn"')  # garbage, then a torn last line
    _, stats = lake.ingest_outcomes(ws)
    assert (stats.valid, stats.quarantined) == (5, 4)
    reasons = [q["reason"].split(":")[0] for q in incremental_quarantine(ws)]
    assert reasons[-2:] == ["malformed JSON", "torn write"]

    ws.writer.append("outcome", "2026-11-18", _bad(3, "y"))  # (d) new bad lines elsewhere
    ws.write_outcomes(_outcomes([7, 8, 10]))  # not on the torn segment's day
    df, stats = lake.ingest_outcomes(ws)
    # the torn line is re-read (not consumed: its writer may still finish it) and is still torn
    assert (stats.lines, stats.valid, stats.quarantined) == (7, 3, 4)
    kept = incremental_quarantine(ws)
    assert len(kept) == 7 and sum(q["reason"].startswith("torn write") for q in kept) == 1
    full, quarantine = _rebuilt(ws)
    assert full.equals(df) and quarantine == kept

    # the torn line gets finished after all: it becomes a row and leaves the quarantine
    lake.ingest_outcomes(ws)
    with open(_segment(ws), "ab") as fh:
        fh.write(b',"name":"reward","value":1.0,"outcome_id":"late","recorded_at":"2026-11-16T10:00:00Z"}}\n')
    df, stats = lake.ingest_outcomes(ws)
    assert (stats.lines, stats.valid, stats.quarantined) == (1, 1, 0)
    assert "late" in df["outcome_id"].to_list() and len(incremental_quarantine(ws)) == 6
    full, quarantine = _rebuilt(ws)
    assert full.equals(df) and quarantine == incremental_quarantine(ws)


def test_torn_line_overwritten_by_the_next_append_is_quarantined_once(tmp_path):
    """A crashed write leaves a torn line; the writer's next append (same file) glues onto it."""
    ws = Workspace.create("w", tmp_path)
    ws.write_outcomes(_outcomes(range(3)))
    with open(_segment(ws), "ab") as fh:
        fh.write(b'{"t":1,"r":{"trajectory_id":"torn"')
    lake.ingest_outcomes(ws)
    ws.write_outcomes(_outcomes(range(3, 6)))  # the first of these lands on the torn line
    df, stats = lake.ingest_outcomes(ws)
    assert (stats.lines, stats.valid, stats.quarantined) == (3, 2, 1)
    kept = incremental_quarantine(ws)
    assert [q["reason"].split(":")[0] for q in kept] == ["malformed JSON"]
    full, quarantine = _rebuilt(ws)
    assert full.equals(df) and quarantine == kept


def test_whole_last_line_without_newline_is_consumed_once(tmp_path):
    """A line caught before its newline but already whole JSON counts now, and not again later."""
    ws = Workspace.create("w", tmp_path)
    ws.write_outcomes(_outcomes(range(3)))
    env = {"t": 5, "w": "x", "r": {**_outcomes([3])[0], "recorded_at": T0.isoformat()}}
    with open(_segment(ws), "ab") as fh:
        fh.write(orjson.dumps(env))
    df, stats = lake.ingest_outcomes(ws)
    assert df.height == 4 and stats.valid == 4
    with open(_segment(ws), "ab") as fh:
        fh.write(b"\n")
    ws.write_outcomes(_outcomes([4]))
    df, stats = lake.ingest_outcomes(ws)
    assert (stats.lines, stats.duplicates, df.height) == (1, 0, 5)
    assert _rebuilt(ws)[0].equals(df)

    with open(_segment(ws), "ab") as fh:  # whole JSON again, but then more bytes on the same line
        fh.write(orjson.dumps({**env, "t": 6}))
    lake.ingest_outcomes(ws)
    with open(_segment(ws), "ab") as fh:
        fh.write(b"garbage\n")
    df, stats = lake.ingest_outcomes(ws)  # the consumed line is no longer what it was: rebuild
    assert stats.lines == 6 and stats.quarantined == 1
    assert _rebuilt(ws)[0].equals(df)


def test_vanished_or_shrunk_segment_triggers_a_full_rebuild(tmp_path):
    ws = Workspace.create("w", tmp_path)
    ws.write_outcomes(_outcomes(range(30)))  # three days, three segments
    lake.ingest_outcomes(ws)
    segments = sorted((ws.landing / "outcome").glob("*/*.ndjson"))
    segments[0].unlink()  # (e) an operator deleted a day
    df, stats = lake.ingest_outcomes(ws)
    assert stats.lines == 20 and df.height == 20
    assert _rebuilt(ws)[0].equals(df)

    data = segments[1].read_bytes()
    segments[1].write_bytes(data[:data.rstrip(b"\n").rfind(b"\n") + 1])  # one line dropped
    df, stats = lake.ingest_outcomes(ws)
    assert stats.lines == 19 and df.height == 19
    assert _rebuilt(ws)[0].equals(df)


def test_table_without_cursor_or_moved_workspace_rebuilds(tmp_path):
    ws = Workspace.create("w", tmp_path / "a")
    ws.write_outcomes(_outcomes(range(10)))
    df, _ = lake.ingest_outcomes(ws)
    storage.write_parquet(df, ws.outcomes_path)  # as written before cursors existed
    assert incremental.load_cursor(ws.outcomes_path) is None
    assert lake.ingest_outcomes(ws)[1].lines == 10
    assert lake.ingest_outcomes(ws)[1].lines == 0
    os.rename(tmp_path / "a", tmp_path / "b")
    moved = Workspace.open("w", tmp_path / "b", create=False)
    again, stats = lake.ingest_outcomes(moved)
    assert stats.lines == 10 and again.equals(df)


def test_preferences_ingest_incrementally_too(tmp_path):
    ws = Workspace.create("w", tmp_path)
    ws.write_preferences([{"chosen": f"a{i}", "rejected": f"b{i}", "recorded_at": T0} for i in range(4)])
    lake.ingest_preferences(ws)
    ws.write_preferences([{"chosen": "c", "rejected": "d", "recorded_at": T0 + timedelta(days=1)}])
    df, stats = lake.ingest_preferences(ws)
    assert (stats.lines, df.height) == (1, 5)
    assert lake.ingest_preferences(ws, full=True)[0].equals(df)
