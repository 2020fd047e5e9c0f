"""Issue 14 item 4: the code example — its scripted agents of mixed skill (careful solves, sloppy
sometimes, broken never), practice tasks disjoint from the held-out ones, and ONE whole-loop run of
`make example-code`'s entry point (capture → join → snapshot → SFT → GRPO → online eval) with tiny settings."""

from __future__ import annotations

import json
from random import Random

from examples.code.agents import AGENTS
from examples.code.environment import make_env
from pipeline.environment import run_episode

AGENT = {a.name: a for a in AGENTS}


def _rewards(agent: str, tasks) -> list[float]:
    return [run_episode(make_env(), AGENT[agent].act(t, Random(t.task_id)), t, max_steps=3).reward for t in tasks]


def test_mixed_skill_on_practice_and_heldout_tasks():
    env = make_env()
    practice, held = env.train_tasks(), env.eval_tasks(0, 4)
    assert not {t.task_id for t in practice} & {t.task_id for t in held}
    assert _rewards("careful", practice + held) == [1.0] * 12
    sloppy = _rewards("sloppy", practice)
    assert 0 < sum(sloppy) < len(practice)
    assert _rewards("broken", held) == [0.0] * 4


def test_example_code_whole_loop(tmp_path, monkeypatch):
    """The one command's loop, smallest settings: every asset materializes for real and eval_ reports the
    checkpoint's and the base model's online success on the held-out tasks, captured to code_eval."""
    from assets.dev.demo import main

    monkeypatch.setenv("TRACEMILL_HOME", str(tmp_path))  # run_demo rewrites these two: restored afterwards
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("TRACEMILL_CONFIG", "examples/code/tracemill.yaml")
    summary = main(["--config", "examples/code/tracemill.yaml", "--populate", "examples.code.agents:populate",
                    "--per-day", "12", "--train-steps", "2"])
    assert summary["counts"]["trajectories"] == 36 and summary["workspace"] == "code"
    for name in ("code_sft", "code_rl"):
        assert summary["corpora"][name]["dagster/row_count"] > 0
        assert summary["checkpoints"][name]["steps"] == 2
        ev = summary["evals"][name]
        assert 0 <= ev["online_success_rate"] <= 1 and 0 <= ev["base_online_success_rate"] <= 1
    headline = json.loads((tmp_path / "demo-summary.json").read_text())  # what `make demo(-real)` writes
    assert headline["model"] == "tiny" and set(headline["corpora"]) == {"code_sft", "code_rl"}
    for name, h in headline["corpora"].items():
        ev = summary["evals"][name]
        assert (h["success"], h["base_success"]) == (round(ev["online_success_rate"], 4),
                                                    round(ev["base_online_success_rate"], 4))
        assert h["n_tasks"] > 0
        assert h["n_unseen_item_tasks"] == 0 and h["success_unseen"] is None  # not the demo world: no item names
        assert len(h["ci95"]) == 2 and h["ci95"][0] <= h["success"] - h["base_success"] <= h["ci95"][1]
    captured = tmp_path / "workspaces" / "code_eval"  # online rollouts: their own workspace, not `code`
    assert any((captured / "landing" / "trajectory").rglob("*.*")) and (captured / "heldout_tasks.json").exists()
