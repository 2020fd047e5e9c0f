"""Issue 16 item 4: the demo is never silent for minutes. A real Dagster job, run the way `make demo` runs its
jobs (`execute_in_process` on a real instance), prints a line when each step starts and ends and, while a
step trains or evaluates, its progress reports (`pipeline.progress`, what TRL's step callback and the online
eval's episode loop send) at each quarter of the total."""

from __future__ import annotations

import io
import re

import dagster as dg
from rich.console import Console

from assets.dev.demo_progress import stage_lines
from pipeline import progress


@dg.asset
def corpus_demo() -> int:
    return 3


@dg.asset
def checkpoint_demo(corpus_demo: int) -> int:
    for step in range(1, 9):  # a "training run" of 8 steps, then an "eval sweep" of 4 episodes, twice
        progress.report(step, 8, 2.0 / step)
    for _ in range(2):
        for episode in range(1, 5):
            progress.report(episode, 4)
    return corpus_demo + 1


def test_a_job_prints_each_step_with_its_time_and_the_training_progress(tmp_path):
    defs = dg.Definitions(assets=[corpus_demo, checkpoint_demo],
                          jobs=[dg.define_asset_job("demo_job", selection="*")])
    out = io.StringIO()
    console = Console(file=out, width=120)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance, stage_lines(instance, console) as run_id:
        result = defs.resolve_job_def("demo_job").execute_in_process(instance=instance, run_id=run_id)
    assert result.success and result.run_id == run_id
    lines = [line.strip() for line in out.getvalue().splitlines()]
    assert lines[:2] == ["▶ corpus_demo", lines[1]] and re.fullmatch(r"✓ corpus_demo \d+\.\ds", lines[1])
    assert lines[2] == "▶ checkpoint_demo" and re.fullmatch(r"✓ checkpoint_demo \d+\.\ds", lines[-1])
    assert lines[3:-1] == ["checkpoint_demo: 2/8, loss 1.000", "checkpoint_demo: 4/8, loss 0.500",
                           "checkpoint_demo: 6/8, loss 0.333", "checkpoint_demo: 8/8, loss 0.250",
                           *["checkpoint_demo: 1/4", "checkpoint_demo: 2/4", "checkpoint_demo: 3/4",
                             "checkpoint_demo: 4/4"] * 2]


@dg.asset
def eval_demo() -> None:
    progress.report(5)  # no total: nothing to show a fraction of
    raise RuntimeError("the checkpoint could not be loaded")


def test_a_failed_step_says_so_and_reports_without_a_total_are_not_printed(tmp_path):
    defs = dg.Definitions(assets=[eval_demo], jobs=[dg.define_asset_job("failing", selection="*")])
    out = io.StringIO()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance, \
            stage_lines(instance, Console(file=out, width=120)) as run_id:
        result = defs.resolve_job_def("failing").execute_in_process(instance=instance, run_id=run_id,
                                                                     raise_on_error=False)
    assert not result.success
    first, second = out.getvalue().splitlines()
    assert first == "  ▶ eval_demo" and re.fullmatch(r"  ✗ eval_demo \d+\.\ds", second)
