"""Behaviour of the filter language against real polars frames with nulls (see pipeline/lake/filters.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.lake.filters import FilterError, apply_filter, compile_filter, describe

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def df() -> pl.DataFrame:
    """Five trajectories; t3 has no outcome at all (null reward/success/agent) as on a quiet day."""
    return pl.DataFrame(
        {
            "trajectory_id": ["t1", "t2", "t3", "t4", "t5"],
            "agent": ["planner", "coder", None, "planner", "it's"],
            "day": ["2026-11-16", "2026-11-17", "2026-11-17", "2026-11-18", "2026-11-18"],
            "started_at": [datetime(2026, 11, 16, 5, tzinfo=UTC), datetime(2026, 11, 17, 0, tzinfo=UTC),
                           datetime(2026, 11, 17, 23, 59, tzinfo=UTC), datetime(2026, 11, 18, 9, tzinfo=UTC),
                           datetime(2026, 11, 18, 11, 30, tzinfo=UTC)],
            "n_tool_calls": [3, 30, None, 20, 0],
            "reward": [1.0, 0.0, None, 0.5, -1.0],
            "success": [1.0, 0.0, None, 1.0, 0.0],
            "flagged": [False, True, None, False, True],
            "outcome_names": [["reward"], ["reward"], None, [], ["reward"]],
        },
        schema_overrides={"n_tool_calls": pl.Int64},
    )


def ids(df: pl.DataFrame, expr: str | None) -> list[str]:
    return apply_filter(df, expr, now=NOW)["trajectory_id"].to_list()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("reward > 0", ["t1", "t4"]),
        ("reward>0", ["t1", "t4"]),
        ("reward >= 0", ["t1", "t2", "t4"]),
        ("reward < 0", ["t5"]),
        ("reward <= 0", ["t2", "t5"]),
        ("reward == 0.5", ["t4"]),
        ("reward = 0.5", ["t4"]),
        ("reward != 0.5", ["t1", "t2", "t5"]),
        ("reward <> 0.5", ["t1", "t2", "t5"]),
        ("reward == -1", ["t5"]),
        ("0 < reward", ["t1", "t4"]),  # literal on the left is flipped
        ("reward > 0 and agent == 'planner' and n_tool_calls <= 20", ["t1", "t4"]),
        ("agent in ['planner','coder'] and not (success == 0)", ["t1", "t4"]),
        ('agent == "it\'s"', ["t5"]),
        ("agent == 'it\\'s'", ["t5"]),
        ("agent in []", []),
        ("agent not in ['planner']", ["t2", "t5"]),  # null agent is not "not in" either
        ("n_tool_calls in [0, 3]", ["t1", "t5"]),
        ("reward in [1, 0.5]", ["t1", "t4"]),
        ("reward is null", ["t3"]),
        ("reward is not null", ["t1", "t2", "t4", "t5"]),
        ("reward between 0 and 0.5", ["t2", "t4"]),
        ("flagged == true", ["t2", "t5"]),
        ("flagged = false", ["t1", "t4"]),
        ("success == true", ["t1", "t4"]),  # a numeric outcome compares with booleans as 1/0
        ("day >= '2026-11-17'", ["t2", "t3", "t4", "t5"]),  # a string column compares as strings
        ("true", ["t1", "t2", "t3", "t4", "t5"]),
        ("false", []),
        ("REWARD > 0 AND Agent == 'planner'", None),  # columns are case-sensitive: checked below
    ],
)
def test_operators(df: pl.DataFrame, expr: str, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(FilterError, match="unknown column 'REWARD'"):
            ids(df, expr)
    else:
        assert ids(df, expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("reward > 0", ["t1", "t4"]),  # null reward is excluded...
        ("not (reward > 0)", ["t2", "t3", "t5"]),  # ...and kept by the negation (two-valued logic)
        ("reward != 1", ["t2", "t4", "t5"]),
        ("not reward is null", ["t1", "t2", "t4", "t5"]),
        ("not not reward > 0", ["t1", "t4"]),
        ("reward > 0 or not (reward > 0)", ["t1", "t2", "t3", "t4", "t5"]),
    ],
)
def test_comparisons_with_null_are_false(df: pl.DataFrame, expr: str, expected: list[str]) -> None:
    assert ids(df, expr) == expected


def test_precedence_not_binds_tighter_than_and_tighter_than_or(df: pl.DataFrame) -> None:
    # or is loosest: a or b and c == a or (b and c)
    assert ids(df, "reward < 0 or agent == 'planner' and reward > 0.6") == ["t1", "t5"]
    assert ids(df, "(reward < 0 or agent == 'planner') and reward > 0.6") == ["t1"]
    assert ids(df, "not agent == 'planner' and reward >= 0") == ["t2"]
    assert ids(df, "reward < 0 Or success == 1 AND NOT (n_tool_calls > 10)") == ["t1", "t5"]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("started_at >= '2026-11-17'", ["t2", "t3", "t4", "t5"]),
        ("started_at > '2026-11-17'", ["t4", "t5"]),  # a date is the whole day
        ("started_at <= '2026-11-17'", ["t1", "t2", "t3"]),
        ("started_at < '2026-11-17'", ["t1"]),
        ("started_at == '2026-11-17'", ["t2", "t3"]),
        ("started_at != '2026-11-17'", ["t1", "t4", "t5"]),
        ("started_at between '2026-11-16' and '2026-11-17'", ["t1", "t2", "t3"]),
        ("started_at in ['2026-11-16', '2026-11-18']", ["t1", "t4", "t5"]),
        ("started_at >= '2026-11-17T23:00:00Z'", ["t3", "t4", "t5"]),
        ("started_at >= '2026-11-18 09:00'", ["t4", "t5"]),  # naive means UTC
        ("started_at > '2026-11-18T10:00:00+01:00'", ["t5"]),
        ("started_at > now - 6h", ["t4", "t5"]),
        ("started_at > now - 1d", ["t3", "t4", "t5"]),
        ("started_at >= now - 36h and started_at < now - 12h", ["t2", "t3"]),
        ("started_at > now - 45m", ["t5"]),
        ("started_at > now + 1s", []),
        ("now - 2d < started_at", ["t2", "t3", "t4", "t5"]),
    ],
)
def test_time_ranges(df: pl.DataFrame, expr: str, expected: list[str]) -> None:
    assert ids(df, expr) == expected


@pytest.mark.parametrize("zone", [None, "Europe/Paris"])
def test_time_ranges_follow_the_column_time_zone(df: pl.DataFrame, zone: str | None) -> None:
    """Naive and non-UTC columns get literals of their own flavour (polars refuses to mix them)."""
    col = pl.col("started_at")
    other = df.with_columns(col.dt.replace_time_zone(None) if zone is None else col.dt.convert_time_zone(zone))
    assert ids(other, "started_at between '2026-11-16' and '2026-11-17'") == ["t1", "t2", "t3"]
    assert ids(other, "started_at > now - 6h") == ["t4", "t5"]


def test_compile_without_schema_uses_at_suffix_for_datetimes(df: pl.DataFrame) -> None:
    expr = compile_filter("started_at == '2026-11-17' and reward is not null", now=NOW)
    assert df.filter(expr)["trajectory_id"].to_list() == ["t2"]


def test_without_schema_there_are_no_type_checks() -> None:
    """describe() has no schema: it must normalise any filter a schema-checked compile accepts."""
    assert describe("created_at == 'not a date' and agent > 3") == "created_at == 'not a date' and agent > 3"
    assert compile_filter("started_at > 5") is not None  # polars would complain at run time instead


def test_lazy_frames_and_empty_filters(df: pl.DataFrame) -> None:
    assert apply_filter(df.lazy(), "reward > 0").collect()["trajectory_id"].to_list() == ["t1", "t4"]
    for empty in ("", "   ", None):
        assert apply_filter(df, empty) is df
        assert df.filter(compile_filter(empty)).height == df.height
        assert describe(empty) == ""


@pytest.mark.parametrize(
    ("expr", "normal"),
    [
        ("reward>0 AND agent=\"planner\"", "reward > 0 and agent == 'planner'"),
        ("0 < reward", "reward > 0"),
        ("(a == 1 OR b == 2) and c <> 3", "(a == 1 or b == 2) and c != 3"),
        ("((a == 1)) or (b == 2 and c == 3)", "a == 1 or b == 2 and c == 3"),
        ("not(a in ['x',\"y\",])", "not (a in ['x', 'y'])"),
        ("a is  NOT null", "a is not null"),
        ("started_at between '2026-11-16' and \"2026-11-18\"", "started_at between '2026-11-16' and '2026-11-18'"),
        ("started_at>now-6h", "started_at > now - 6h"),
        ("x == -1.50", "x == -1.5"),
    ],
)
def test_describe_normalises(expr: str, normal: str) -> None:
    assert describe(expr) == normal
    assert describe(normal) == normal  # idempotent: lineage compares these texts


def test_error_points_at_the_offending_token() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("reward >> 0")
    assert info.value.position == 8
    line, caret = str(info.value).splitlines()
    assert line == "reward >> 0"
    assert caret.startswith(" " * 8 + "^ unexpected '>'")
    assert "position 8" in caret
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("expr", "position", "reason"),
    [
        ("reward > ", 9, "unexpected end of input, expected a value"),
        ("(reward > 0", 11, "expected ')'"),
        ("reward > 0)", 10, "unexpected ')'"),
        ("reward > 0 agent", 11, "unexpected 'agent'"),
        ("agent == 'planner", 9, "unterminated string"),
        ("reward > 0; drop table", 10, "unexpected character ';'"),
        ("reward == null", 10, "is null"),
        ("agent in ['a', 'b'", 18, "expected ',' or ']'"),
        ("agent in ['a' 'b']", 14, "unexpected \"'b'\", expected ',' or ']'"),
        ("agent in 'a'", 9, "expected '['"),
        ("agent in [reward]", 10, "literal values"),
        ("reward in [1, 'a']", 14, "same type"),
        ("reward is nul", 10, "expected 'null'"),
        ("started_at > now - 6", 19, "expected a duration"),
        ("started_at > now - 6 h", 19, "expected a duration"),
        ("reward > 1e999", 9, "number out of range"),
        ("started_at > '9999-12-31'", 13, "date out of range"),
        ("started_at > now - 99999999d", 19, "date out of range"),
        ("__import__('os')", 10, "unexpected '('"),
        ("__import__('os').system('id')", 16, "unexpected character '.'"),
        ("reward\n>\t>0", 9, "unexpected '>'"),
    ],
)
def test_syntax_errors(expr: str, position: int, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    assert (info.value.position, reason in info.value.reason) == (position, True), str(info.value)
    assert str(info.value).splitlines()[1].index("^") == position


@pytest.mark.parametrize(
    ("expr", "position", "reason"),
    [
        ("agent > 3", 8, "cannot compare agent (string) with 3 (number)"),
        ("reward == 'high'", 10, "cannot compare reward (number) with 'high' (string)"),
        ("started_at > 5", 13, "cannot compare started_at (datetime) with 5 (number)"),
        ("started_at > 'yesterday'", 13, "'yesterday' is not a date or datetime"),
        ("outcome_names == 'reward'", 17, "cannot compare outcome_names (List(String))"),
        ("agent", 5, "expected a comparison after agent"),
        ("n_tool_calls in ['3']", 17, "cannot compare n_tool_calls (number) with '3' (string)"),
    ],
)
def test_type_errors_are_caught_at_compile_time(df: pl.DataFrame, expr: str, position: int, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        apply_filter(df, expr)
    assert info.value.position == position and reason in info.value.reason, str(info.value)


def test_unknown_column_suggests_the_closest_and_lists_known(df: pl.DataFrame) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("reward > 0 and n_tool_cals < 5", df.schema)
    assert info.value.position == 15
    assert "unknown column 'n_tool_cals' (did you mean 'n_tool_calls'?)" in info.value.reason
    assert "known columns: agent, day, flagged, n_tool_calls, outcome_names, reward, started_at" in info.value.reason


def test_nesting_is_bounded() -> None:
    assert compile_filter("(" * 30 + "reward > 0" + ")" * 30) is not None
    with pytest.raises(FilterError, match="nested too deeply"):
        compile_filter("(" * 500 + "reward > 0" + ")" * 500)
    with pytest.raises(FilterError, match="nested too deeply"):
        compile_filter("not " * 5000 + "reward > 0")


def test_long_chains_compile_and_run(df: pl.DataFrame) -> None:
    expr = " or ".join(f"n_tool_calls == {i}" for i in range(1000))
    assert ids(df, expr) == ["t1", "t2", "t4", "t5"]
    ids_list = ", ".join(f"'t{i}'" for i in range(2000))
    assert ids(df, f"trajectory_id in [{ids_list}]") == ["t1", "t2", "t3", "t4", "t5"]


_WORDS = ["reward", "agent", "started_at", "n_tool_calls", "flagged", "outcome_names", "day", "nope", "0", "-2",
          "1.5", "'planner'", "'2026-11-17'", "'2026-11-17T05:00Z'", "true", "now", "now - 6h"]
_SOUP = st.lists(st.sampled_from([*_WORDS, ">", ">=", "==", "=", "!=", "<", "(", ")", "[", "]", ",", "-", "+", "and",
                                  "or", "not", "in", "is", "null", "between", "6h", "'", '"', "1e999", "$"]),
                 max_size=12).map(" ".join)
_OPERAND = st.sampled_from(_WORDS)
_PREDICATE = st.one_of(
    st.tuples(_OPERAND, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "="]), _OPERAND).map(" ".join),
    st.tuples(_OPERAND, st.sampled_from(["in", "not in"]),
              st.lists(_OPERAND, max_size=3).map(lambda xs: f"[{', '.join(xs)}]")).map(" ".join),
    st.tuples(_OPERAND, st.sampled_from(["is null", "is not null"])).map(" ".join),
    st.tuples(_OPERAND, _OPERAND, _OPERAND).map(lambda t: f"{t[0]} between {t[1]} and {t[2]}"),
)
_WELL_FORMED = st.recursive(_PREDICATE, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join), inner.map(lambda e: f"not ({e})")),
    max_leaves=5)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), _SOUP, _WELL_FORMED))
def test_garbage_only_ever_raises_filter_error(df: pl.DataFrame, expr: str) -> None:
    """Whatever a user types, the only failure is a FilterError; what compiles against the schema
    (including type mix-ups like `flagged > now`) also runs on the frame without a polars error,
    and its describe() text selects the same rows."""
    try:
        compile_filter(expr)
        result = apply_filter(df, expr, now=NOW)
    except FilterError as exc:
        assert 0 <= exc.position <= len(expr)
        return
    assert set(result["trajectory_id"]) <= set(df["trajectory_id"])
    normal = describe(expr)  # lineage records this text: it must mean the same and be a fixed point
    assert describe(normal) == normal
    assert apply_filter(df, normal, now=NOW)["trajectory_id"].to_list() == result["trajectory_id"].to_list()
