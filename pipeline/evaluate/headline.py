"""The headline of an evaluation: did the checkpoint act better than the base model, on which tasks, and how
sure are we. One small typed record per corpus, written by the demos as `demo-summary.json`.

Why a separate record: the report (`pipeline.evaluate.compare`) holds every metric and slice; a person or a
CI job deciding "did training help" wants four numbers, paired on the same held-out tasks, with the
interval of the difference (a paired bootstrap, as the report's deltas use). `novel` names the tasks that
test generalisation (for the demo: items no training trajectory names); the caller says what that is,
so this module knows no world.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.evaluate.compare import bootstrap_ci

TaskPredicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class Headline:
    """Online success of a checkpoint and of the base model on the same held-out tasks; `ci95` is the
    paired bootstrap interval of (checkpoint − base) success; `*_unseen` restrict to the novel tasks."""

    checkpoint: str
    n_tasks: int
    n_unseen_item_tasks: int
    base_success: float | None
    success: float
    success_unseen: float | None
    base_success_unseen: float | None
    ci95: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ci95": list(self.ci95) if self.ci95 else None}


def _rate(tasks: list[Mapping[str, Any]]) -> float | None:
    return round(sum(bool(t["success"]) for t in tasks) / len(tasks), 4) if tasks else None


def headline(checkpoint: str, current: Mapping[str, Any], base: Mapping[str, Any] | None,
             novel: TaskPredicate | None = None, seed: int = 0) -> Headline:
    """The headline from two online reports (`online_eval` results) on the same seed and tasks. A base
    report on other tasks is refused: unpaired numbers would look comparable and not be."""
    tasks = list(current["tasks"])
    base_tasks = list(base["tasks"]) if base else []
    if base and [t["task_id"] for t in base_tasks] != [t["task_id"] for t in tasks]:
        raise ValueError("the base model's online report covers other tasks: evaluate both with the same "
                         "online.seed and online.n_tasks")
    unseen = [i for i, t in enumerate(tasks) if novel is not None and novel(t["task"])]
    ci = None
    if base_tasks:
        _, lo, hi = bootstrap_ci([float(t["success"]) for t in tasks], [float(t["success"]) for t in base_tasks],
                                 seed=seed)
        ci = (round(lo, 4), round(hi, 4))
    return Headline(checkpoint=checkpoint, n_tasks=len(tasks), n_unseen_item_tasks=len(unseen),
                    base_success=_rate(base_tasks) if base else None, success=_rate(tasks) or 0.0,
                    success_unseen=_rate([tasks[i] for i in unseen]),
                    base_success_unseen=_rate([base_tasks[i] for i in unseen]) if base_tasks else None, ci95=ci)
