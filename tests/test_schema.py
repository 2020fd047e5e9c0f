"""Schema: round trips, JSON-string tool arguments, unknown fields kept, errors that name the field."""

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from pipeline.schema import Message, Outcome, Preference, Trajectory, format_validation_error, json_schemas


def _traj(**kw):
    base = {
        "trajectory_id": "t-1", "agent": {"name": "planner", "version": "1"}, "task_id": "task-9",
        "started_at": "2026-11-20T10:00:00Z",
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "price of apples?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"item": "apple"}}],
             "meta": {"input_tokens": 12, "output_tokens": 5, "latency_ms": 80.5}},
            {"role": "tool", "tool_call_id": "c1", "name": "lookup", "content": "1.25"},
            {"role": "assistant", "content": "1.25 USD", "reasoning": "copied"},
        ],
    }
    base.update(kw)
    return base


def test_trajectory_round_trip_keeps_everything():
    t = Trajectory.model_validate(_traj())
    again = Trajectory.model_validate_json(t.model_dump_json())
    assert again == t
    assert again.messages[2].tool_calls[0].arguments == '{"item":"apple"}'
    assert orjson.loads(again.messages[2].tool_calls[0].arguments) == {"item": "apple"}
    assert again.day == "2026-11-20"
    assert again.messages[2].meta.input_tokens == 12


def test_arguments_stay_strings_even_when_invalid_json():
    # Storage must not reinterpret arguments; validity is a curation rule, not a capture rejection.
    t = Trajectory.model_validate(_traj(messages=[
        {"role": "assistant", "tool_calls": [{"id": "c", "name": "x", "arguments": "{not json"}]}]))
    assert t.messages[0].tool_calls[0].arguments == "{not json"
    with pytest.raises(ValueError):
        t.messages[0].tool_calls[0].parsed_arguments()


def test_naive_timestamps_are_utc_and_agent_string_accepted():
    t = Trajectory.model_validate(_traj(agent="solo", started_at=datetime(2026, 11, 20, 23, 30)))
    assert t.started_at.tzinfo == UTC and t.agent.name == "solo"


def test_unknown_fields_are_kept_in_metadata_not_rejected():
    t = Trajectory.model_validate(_traj(customer_tier="gold", metadata={"a": 1}))
    assert t.metadata == {"a": 1, "extra": {"customer_tier": "gold"}}


def test_validation_errors_name_the_field_path():
    bad = _traj()
    bad["messages"][1]["role"] = "robot"
    with pytest.raises(ValidationError) as err:
        Trajectory.model_validate(bad)
    text = format_validation_error(err.value)
    assert text.startswith("messages.1.role:")
    with pytest.raises(ValidationError) as err:
        Trajectory.model_validate({"trajectory_id": "x"})
    assert "agent: Field required" in format_validation_error(err.value)


def test_tool_calls_only_on_assistant():
    with pytest.raises(ValidationError, match="only assistant messages"):
        Message(role="user", tool_calls=[{"id": "a", "name": "b"}])


def test_outcome_rules_and_stable_id():
    kw = {"trajectory_id": "t", "name": "reward", "value": 1, "recorded_at": "2026-11-21T00:00:00Z"}
    a, b = Outcome(**kw), Outcome(**kw)
    assert a.outcome_id == b.outcome_id and len(a.outcome_id) == 20
    assert Outcome(**{**kw, "value": 0.5}).outcome_id != a.outcome_id
    assert Outcome(trajectory_id="t", name="success", value=True).value == 1.0
    with pytest.raises(ValidationError, match="needs a numeric"):
        Outcome(trajectory_id="t", name="reward")
    with pytest.raises(ValidationError, match="name"):
        Outcome(trajectory_id="t", name="bad name!", value=1)


def test_preference_needs_two_different_trajectories():
    assert Preference(chosen="a", rejected="b").source == "human"
    with pytest.raises(ValidationError, match="different"):
        Preference(chosen="a", rejected="a")


def test_json_schema_export_covers_all_records():
    schemas = json_schemas()
    assert set(schemas) == {"trajectory", "outcome", "preference"}
    assert "messages" in schemas["trajectory"]["properties"]
    assert schemas["trajectory"]["required"] == ["trajectory_id", "agent"]
