"""The headline of an evaluation (`demo-summary.json`): base vs checkpoint online success, paired on the same
held-out tasks, on the novel ones, with the paired bootstrap interval of the difference."""

from __future__ import annotations

import pytest

from pipeline.evaluate.headline import headline


def _report(successes: list[bool], items: list[str]) -> dict:
    return {"tasks": [{"task_id": f"t{i}", "success": s, "task": {"item": item}}
                      for i, (s, item) in enumerate(zip(successes, items, strict=True))]}


ITEMS = ["rice", "cement", "milk", "paint", "eggs", "wire"]


def test_headline_pairs_tasks_and_slices_the_novel_ones():
    current = _report([True, True, True, False, True, True], ITEMS)
    base = _report([False, False, True, False, False, False], ITEMS)
    h = headline("v2-abc", current, base, novel=lambda task: task["item"] in {"cement", "paint", "wire"})
    assert (h.n_tasks, h.n_unseen_item_tasks) == (6, 3)
    assert (h.success, h.base_success) == (round(5 / 6, 4), round(1 / 6, 4))
    assert (h.success_unseen, h.base_success_unseen) == (round(2 / 3, 4), 0.0)
    lo, hi = h.ci95
    assert 0 < lo <= 4 / 6 <= hi <= 1  # every task moved up or stayed: the interval excludes 0
    assert h.to_dict()["ci95"] == [lo, hi]
    alone = headline("v2-abc", current, None)
    assert alone.base_success is None and alone.ci95 is None and alone.success_unseen is None


def test_a_base_report_on_other_tasks_is_refused():
    with pytest.raises(ValueError, match="same online.seed and online.n_tasks"):
        headline("v1", _report([True, False], ITEMS[:2]), _report([True], ITEMS[:1]))


def test_unseen_items_are_those_the_captured_traffic_never_names(tmp_path):
    """The headline's unseen-item slice is measured against the traffic itself: the real lane's traffic never
    names `UNSEEN_ITEMS`; the tiny demo's names every item, so it has no unseen slice to claim."""
    from pipeline.capture.workspace import Workspace
    from pipeline.demo.agents import items_named, populate, populate_seen_items
    from pipeline.demo.world import ITEMS, SEEN_ITEMS, UNSEEN_ITEMS

    real = Workspace.open("real", home=tmp_path)
    populate_seen_items(real, days=["2026-11-01"], per_day=60)
    named = items_named(real)
    assert named and named <= set(SEEN_ITEMS) and not named & set(UNSEEN_ITEMS)
    tiny = Workspace.open("tiny", home=tmp_path)
    populate(tiny, days=["2026-11-01"], per_day=60)
    assert items_named(tiny) <= set(ITEMS) and items_named(tiny) & set(UNSEEN_ITEMS)
