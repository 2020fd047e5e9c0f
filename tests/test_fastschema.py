"""The msgspec fast path must never accept what the pydantic schema would refuse, nor change meaning."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.capture import fast_validate as fastschema
from pipeline.schema import Trajectory

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
values = st.recursive(scalars, lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=6), v, max_size=3),
                      max_leaves=8)
times = st.sampled_from(["2026-11-20T09:00:00Z", "2026-11-20T09:00:00", "2026-11-20T23:30:00-05:00",
                         "2026-11-20T09:00:00.1234567Z", "2026-11-20", "0001-01-01T00:00:00+01:00",
                         "9999-12-31T23:59:59-01:00", "2026-11-20 09:00:00Z", "2026-02-30T00:00:00Z", 1700000000])
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "robot"])},
    optional={"content": st.none() | st.text(max_size=5) | st.integers(), "tool_call_id": st.none() | st.text(max_size=3),
              "is_error": st.booleans() | st.integers(0, 1), "name": st.none() | st.text(max_size=3),
              "tool_calls": st.none() | st.lists(st.fixed_dictionaries(
                  {"id": st.text(max_size=3), "name": st.text(max_size=3)},
                  optional={"arguments": values}), max_size=2),
              "meta": st.none() | st.fixed_dictionaries({}, optional={
                  "input_tokens": st.integers(-2, 5) | st.floats(0, 3), "latency_ms": st.floats(-1, 5),
                  "timestamp": times, "extra_key": st.integers()}),
              "surprise": st.integers()})
trajectory = st.fixed_dictionaries(
    {"trajectory_id": st.text(max_size=4), "agent": st.text(max_size=3) | st.fixed_dictionaries(
        {"name": st.text(max_size=3)}, optional={"version": st.none() | st.text(max_size=2)})},
    optional={"started_at": times, "ended_at": st.none() | times, "messages": st.lists(message, max_size=3),
              "metadata": st.dictionaries(st.text(max_size=4), values, max_size=2), "workspace": st.sampled_from(["w", "v"]),
              "tools": st.lists(st.dictionaries(st.text(max_size=3), values, max_size=2), max_size=2),
              "unknown_top": values})


def _canonical(t: Trajectory) -> dict:
    return t.model_dump(mode="json", exclude_none=True)


@settings(max_examples=1000, deadline=None, database=None, derandomize=True)
@given(trajectory)
def test_fast_path_agrees_with_pydantic(obj):
    raw = json.dumps(obj).encode()
    res = fastschema.validate_json(raw, 0, "w")
    try:
        expected = Trajectory.model_validate(obj)
        if expected.workspace not in (None, "w"):
            raise ValueError("workspace mismatch")
    except (ValidationError, ValueError, TypeError, OverflowError):
        expected = None
    if isinstance(res, fastschema.Rejected):
        assert expected is None, f"rejected what pydantic accepts: {res.error}"
        return
    landed = Trajectory.model_validate_json(res.json)  # what the lake will read back
    assert landed.workspace == "w" and landed.day == res.day
    if expected is not None and "started_at" in obj:
        expected.workspace = "w"
        assert _canonical(landed) == _canonical(expected)


def test_fast_path_is_taken_for_canonical_records():
    raw = json.dumps({"trajectory_id": "t", "agent": "a", "messages": [{"role": "user", "content": "x"}]}).encode()
    assert isinstance(fastschema._decoder.decode(raw), fastschema.FastTrajectory)
    with pytest.raises(msgspec.ValidationError):  # non-canonical: left to pydantic
        fastschema._decoder.decode(b'{"trajectory_id": "t", "agent": "a", "extra": 1}')


def test_local_fast_write_is_all_or_nothing(tmp_path):
    from pipeline.capture.landing import read_landed
    from pipeline.capture.workspace import Workspace

    ws = Workspace.create("w", tmp_path)
    writer = fastschema.LandingWriter(ws.landing)
    good = {"trajectory_id": "a", "agent": "x", "started_at": "2026-11-20T09:00:00Z"}
    with pytest.raises(ValueError, match=r"trajectory b: messages\.0\.role"):
        fastschema.write_trajectories(ws, [good, {**good, "trajectory_id": "b", "messages": [{"role": "robot"}]}], writer)
    assert fastschema.write_trajectories(ws, [good], writer) == 1
    assert [line.record["trajectory_id"] for line in read_landed(ws.landing, "trajectory")] == ["a"]
