"""Compare a checkpoint with the base model and the previous checkpoint, and say whether it is better.

A difference of two success rates on 30 tasks means little without an interval, so per-task values
are compared *paired* (same seed, same tasks) with a bootstrap confidence interval, and the verdict
is plain words: "better", "worse" or "no significant difference". Slices are predicates on the task
(not on the outcome), so every slice holds the same tasks for every model and stays pairable.
`build_report` gathers everything once; the Markdown (Dagster metadata) and the rich table (terminal)
in `pipeline/evaluate/render.py`, the PNG plots (`plots.py`) and the files and MLflow logging
(`publish.py`) all render that one dict. The shared vocabulary (models, directions, verdict words)
is in `verdict.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.evaluate.online import summarize
from pipeline.evaluate.verdict import MODELS, OFFLINE_METRICS, OFFLINE_PRIMARY, finite, verdict_words

Slice = Callable[[Mapping[str, Any]], bool]
DEFAULT_SLICES: dict[str, Slice] = {
    "all": lambda r: True,
    "usd (2 tools)": lambda r: r["task"]["currency"] == "USD",
    "converted (3 tools)": lambda r: r["task"]["currency"] != "USD",
    "fractional qty": lambda r: float(r["task"]["quantity"]) % 1 != 0,
}
DEFAULT_METRICS = ["success_rate", "mean_reward", "tool_call_error_rate", "invalid_output_rate", "mean_steps"]
PER_TASK_KEYS = {"success_rate": "success", "mean_reward": "reward", "mean_steps": "steps"}
def bootstrap_ci(values_a: Sequence[float], values_b: Sequence[float], n: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean(a - b), lo, hi): a paired percentile bootstrap of the mean difference. Pairs with a NaN
    are dropped; no pairs give NaNs. Pairing removes task difficulty from the noise."""
    a, b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.size} and {b.size}")
    diffs = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if diffs.size == 0:
        return math.nan, math.nan, math.nan
    means = diffs[np.random.default_rng(seed).integers(0, diffs.size, (n, diffs.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diffs.mean()), float(lo), float(hi)


def per_example(result: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per-task values of the metrics that are plain means over tasks (so their CI matches the metric)."""
    return {m: [float(r[k]) for r in result.get("tasks", [])] for m, k in PER_TASK_KEYS.items()}


def _as_examples(values: Any, primary: str) -> dict[str, Sequence[float]]:
    if values is None:
        return {}
    return dict(values) if isinstance(values, Mapping) else {primary: values}


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any], per_example_current: Any = None,
            per_example_baseline: Any = None, *, primary: str = "success_rate", n: int = 1000, seed: int = 0,
            alpha: float = 0.05) -> dict[str, Any]:
    """Deltas (current - baseline) of every shared numeric metric, paired bootstrap CIs where per-example
    values are given (a sequence for `primary`, or a mapping metric → sequence), and a verdict on
    `primary`: significant only when the CI excludes 0."""
    deltas = {k: float(current[k]) - float(baseline[k]) for k in current
              if k in baseline and finite(current[k]) and finite(baseline[k])}
    ex_cur, ex_base = _as_examples(per_example_current, primary), _as_examples(per_example_baseline, primary)
    ci = {k: bootstrap_ci(ex_cur[k], ex_base[k], n, seed, alpha) for k in ex_cur if k in ex_base}
    delta, lo, hi = ci.get(primary, (math.nan, math.nan, math.nan))
    return {"primary": primary, "verdict": verdict_words(primary, lo, hi), "deltas": deltas, "ci": ci,
            "alpha": alpha, "primary_delta": deltas.get(primary, delta)}


def slice_metrics(result: Mapping[str, Any], slices: Mapping[str, Slice]) -> dict[str, dict[str, float]]:
    """Metrics per slice. "all" also keeps the result's other numeric metrics (e.g. offline loss merged
    in by the caller); a result without per-task rows has only "all"."""
    tasks = result.get("tasks")
    top = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if not tasks:
        return {"all": top}
    out = {name: summarize([r for r in tasks if keep(r)]) for name, keep in slices.items()}
    out["all"] = {**top, **out.get("all", summarize(tasks))}
    return out


def _paired_tasks(a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    ids_a, ids_b = [r["task_id"] for r in a.get("tasks", [])], [r["task_id"] for r in b.get("tasks", [])]
    if ids_a and ids_b and ids_a != ids_b:
        raise ValueError("results cover different tasks: evaluate both with the same seed and n_tasks")


def offline_section(tables: Mapping[str, Mapping[str, Mapping[str, Any]] | None],
                    per_example: Mapping[str, Any] | None = None, *, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any] | None:
    """Offline metrics per model and slice ({model: {slice: metrics}}, slices being the spec's TQL
    queries), compared like the online ones. Only pass base/previous numbers measured on the *same*
    corpus version and queries: other rows would make the deltas meaningless. CIs need per-example
    values ({model: {slice: {metric: [...]}}}); without them the deltas are shown untested."""
    clean = {m: {s: {k: v for k, v in row.items() if finite(v)} for s, row in t.items()}
             for m in MODELS if (t := tables.get(m))}
    if "checkpoint" not in clean:
        return None
    cur, ex = clean["checkpoint"], per_example or {}
    metrics = [k for k in OFFLINE_METRICS if any(k in row for row in cur.values())]
    primary = next((k for k in OFFLINE_PRIMARY if k in metrics), "loss")
    comparisons = {other: {s: compare(cur[s], clean[other][s], ex.get("checkpoint", {}).get(s),
                                      ex.get(other, {}).get(s), primary=primary, n=n_boot, seed=seed)
                           for s in cur if s in clean[other]}
                   for other in ("base", "previous") if other in clean}
    return {"metrics": metrics, "primary": primary, "tables": clean, "comparisons": comparisons}


def _default_slices(current: Mapping[str, Any]) -> dict[str, Slice]:
    """The demo world's slices (by currency, quantity) when its tasks are what was evaluated; any other
    environment's tasks have other fields, so they get only "all" (issue 14: examples/support, code)."""
    tasks = current.get("tasks") or []
    demo = all(isinstance(r.get("task"), Mapping) and {"currency", "quantity"} <= set(r["task"]) for r in tasks)
    return DEFAULT_SLICES if demo else {"all": DEFAULT_SLICES["all"]}


def build_report(current: Mapping[str, Any], *, base: Mapping[str, Any] | None = None,
                 previous: Mapping[str, Any] | None = None, slices: Mapping[str, Slice] | None = None,
                 metrics: Sequence[str] = DEFAULT_METRICS, loss_curve: Sequence[tuple[int, float]] | None = None,
                 primary: str = "success_rate", n_boot: int = 1000, seed: int = 0,
                 offline: Mapping[str, Any] | None = None, offline_per_example: Mapping[str, Any] | None = None,
                 ) -> dict[str, Any]:
    """One JSON-able dict with slice × metric tables for each model, paired comparisons of the
    checkpoint against base and previous per slice, reward lists, the loss curve, and (when given)
    the offline metrics per slice in the same shape (see `offline_section`)."""
    slices = dict(slices or _default_slices(current))
    results = {k: v for k, v in zip(MODELS, (current, base, previous), strict=True) if v is not None}
    tables = {m: slice_metrics(r, slices) for m, r in results.items()}
    comparisons: dict[str, dict[str, Any]] = {}
    for other in ("base", "previous"):
        if other not in results:
            continue
        _paired_tasks(current, results[other])
        comparisons[other] = {}
        for name in tables["checkpoint"]:
            if name not in tables[other]:
                continue
            keep = slices.get(name, lambda r: True)
            sub = [{**r, "tasks": [t for t in r.get("tasks", []) if keep(t)]} for r in (current, results[other])]
            cur, oth = (per_example(s) if s["tasks"] else None for s in sub)
            comparisons[other][name] = compare(tables["checkpoint"][name], tables[other][name], cur, oth,
                                               primary=primary, n=n_boot, seed=seed)
    against = "previous" if "previous" in comparisons else "base" if "base" in comparisons else None
    return {
        "models": {m: {"checkpoint": r.get("checkpoint"), "agent": r.get("agent")} for m, r in results.items()},
        "metrics": list(metrics), "primary": primary, "tables": tables, "comparisons": comparisons,
        "verdict": comparisons[against]["all"]["verdict"] if against else None, "verdict_against": against,
        "rewards": {m: [float(t["reward"]) for t in r.get("tasks", [])] for m, r in results.items()},
        "loss_curve": [(int(s), float(v)) for s, v in (loss_curve or [])],
        "offline": offline_section(offline, offline_per_example, n_boot=n_boot, seed=seed) if offline else None,
    }


@dataclass(frozen=True)
class Gate:
    """The promotion gate's verdict on a checkpoint (`eval/gate.json`)."""

    passed: bool
    message: str
    metric: str | None = None
    value: float | None = None
    previous: float | None = None
    margin: float | None = None
    first_checkpoint: bool = False

    def metadata(self) -> dict[str, Any]:
        """Numbers for the gate check's metadata (Dagster plots a check's numeric metadata over runs)."""
        nums = {k: round(v, 4) for k in ("value", "previous", "margin") if finite(v := getattr(self, k))}
        return {"message": self.message, "metric": self.metric or "", **nums,
                "first_checkpoint": self.first_checkpoint}


def gate(current: Mapping[str, Any], previous: Mapping[str, Any] | None, metric: str, margin: float,
         higher_is_better: bool = True) -> tuple[bool, str]:
    """Block promotion when the new checkpoint is worse than the previous by more than `margin`.
    No previous checkpoint passes and says so ("first checkpoint"); a missing/NaN current value fails
    unless the previous lacks it too."""
    if previous is None:
        return True, f"{metric}: first checkpoint, nothing to compare with"
    if not finite(previous.get(metric)):
        return True, f"{metric}: no previous value to compare with"
    cur, prev = current.get(metric), float(previous[metric])
    if not finite(cur):
        return False, f"{metric}: missing for the new checkpoint (previous {prev:.4f})"
    worse_by = (prev - cur) if higher_is_better else (cur - prev)
    verb = "passed" if worse_by <= margin else "FAILED"
    return worse_by <= margin, (f"{metric} gate {verb}: {cur:.4f} vs previous {prev:.4f} "
                                f"({'higher' if higher_is_better else 'lower'} is better, margin {margin:g})")


def loss_curve_from_mlflow(tracker: Any, run_id: str, key: str = "loss") -> list[tuple[int, float]]:
    """(step, loss) pairs the trainer logged to its MLflow run, for `build_report(loss_curve=...)`."""
    history = tracker.client.get_metric_history(run_id, key)
    return sorted((int(m.step), float(m.value)) for m in history)
