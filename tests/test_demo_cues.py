"""The real-model lane's cued agents (`pipeline.demo.cues`): they name the question's currency right before
they decide whether to convert, and nothing else about their runs changes (tools, calls, answers, rewards)."""

from __future__ import annotations

from random import Random

import pytest

from pipeline.demo.agents import AGENTS, ScriptPolicy
from pipeline.demo.cues import cue_text, cued
from pipeline.demo.rollout import rollout
from pipeline.demo.world import build_task


def _run(agent: str, task, seed: str, cues: bool):
    script = AGENTS[agent].script(task, Random(seed))
    return rollout(ScriptPolicy(cued(script, task) if cues else script), task)


def _turns(messages):
    return [m for m in messages if m["role"] == "assistant"]


@pytest.mark.parametrize("currency", ["EUR", "USD"])
def test_the_turn_after_the_calculator_names_the_currency_then_acts(currency):
    task = build_task("nails", 6, 3.97, currency)
    plain, _, plain_reward = _run("careful", task, "s", cues=False)
    said, _, reward = _run("careful", task, "s", cues=True)
    assert reward == plain_reward == 1.0
    calls = [[c["name"] for c in m["tool_calls"]] for m in _turns(said)]
    assert calls == [[c["name"] for c in m["tool_calls"]] for m in _turns(plain)]  # the same actions
    third = _turns(said)[2]
    total = f"{6 * 3.97:.2f}"
    if currency == "EUR":
        assert third["content"] == f"{total} USD; the question asks the cost in EUR: converting."
        assert third["tool_calls"][0]["name"] == "convert"
        assert _turns(said)[3]["content"] == _turns(plain)[3]["content"]  # the answer itself is untouched
    else:
        assert third["content"] == f"{total} USD; the question asks the cost in USD. The answer is {total} USD."
        assert not third["tool_calls"]
    # only that turn changes
    assert [m for i, m in enumerate(said) if i != said.index(third)] == [
        m for i, m in enumerate(plain) if i != said.index(third)]


def test_an_agent_that_skips_a_needed_conversion_says_so_and_still_fails():
    task = build_task("rope", 8, 0.52, "CAD")
    skipped = next(s for s in (f"h{i}" for i in range(200))
                   if len(_turns(_run("hasty", task, s, cues=False)[0])) == 3
                   and _run("hasty", task, s, cues=False)[2] == 0.0)
    messages, _, reward = _run("hasty", task, skipped, cues=True)
    assert reward == 0.0
    last = _turns(messages)[-1]
    assert last["content"].startswith(cue_text(task, "4.16", converting=False))
    assert "converting" not in last["content"]


def test_a_failed_calculator_call_gets_no_cue():
    """The cue copies the calculator's result; an error message is not a total."""
    task = build_task("glue", 2, 2.0, "EUR")

    def script():
        yield {"role": "assistant", "content": None, "tool_calls": [{"name": "calculator",
                                                                      "arguments": {"expression": "2 * x"}}]}
        yield {"role": "assistant", "content": "I could not work it out.", "tool_calls": []}

    messages, _, _ = rollout(ScriptPolicy(cued(script(), task)), task)
    assert _turns(messages)[-1]["content"] == "I could not work it out."
