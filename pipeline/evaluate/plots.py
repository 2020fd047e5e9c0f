"""PNG plots of an evaluation report (see pipeline/evaluate/compare.py), for Dagster metadata and MLflow artifacts.

Kept apart from the report so the numbers stay readable and matplotlib is only imported when a picture
is drawn. Everything uses matplotlib's object API on the Agg canvas: no global pyplot state, so plots
are safe inside a Dagster step or a test run in parallel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluate.verdict import MODELS, finite


def _is_rate(values: Sequence[float]) -> bool:
    return bool(values) and all(0 <= v <= 1 for v in values)


def _shown(tables: Mapping[str, Mapping[str, Mapping[str, Any]]], metrics: Sequence[str]) -> tuple[list[str], list[str]]:
    """The metrics and slices that hold at least one finite value for some model: an empty panel or an
    empty group of bars (a slice with no rows) says nothing and pushes the real ones off the picture."""
    models = [m for m in MODELS if m in tables]
    slices = list(tables["checkpoint"])
    has = lambda s, k: any(finite(tables[m].get(s, {}).get(k)) for m in models)  # noqa: E731
    metrics = [k for k in metrics if any(has(s, k) for s in slices)]
    return metrics, [s for s in slices if any(has(s, k) for k in metrics)]


def _grid(n: int, title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes[n:]:
        ax.remove()  # no blank frames where the grid has more cells than metrics
    fig.supxlabel(title, fontsize=8)
    return fig, axes[:n]


def _grouped_bars(tables: Mapping[str, Mapping[str, Mapping[str, Any]]], metrics: Sequence[str],
                  slices: Sequence[str], title: str) -> Any:
    """One subplot per metric, one group of bars per slice, one bar per model: the values themselves.
    Uncertainty is drawn on the deltas (`_delta_points`), where it belongs: the CI is of the
    difference, not of either model's value."""
    models = [m for m in MODELS if m in tables]
    fig, axes = _grid(len(metrics), title)
    width = 0.8 / len(models)
    for ax, metric in zip(axes, metrics, strict=True):
        heights: list[float] = []
        for j, m in enumerate(models):
            pts = [(i + j * width, float(v)) for i, s in enumerate(slices)
                   if finite(v := tables[m].get(s, {}).get(metric))]  # a missing value draws no bar, not a 0
            heights += [h for _, h in pts]
            bars = ax.bar([x for x, _ in pts], [h for _, h in pts], width, label=m, color=f"C{MODELS.index(m)}")
            ax.bar_label(bars, fmt="%.3g", fontsize=6)  # a measured 0 shows as "0", not as an empty panel
        ax.set_xticks(np.arange(len(slices)) + width * (len(models) - 1) / 2, slices, rotation=20, fontsize=7)
        if _is_rate(heights):  # rates on a common scale, also when they are all zero
            ax.set_ylim(0.0, 1.05)
        elif metric == "perplexity" and heights and min(heights) > 0 and max(heights) / min(heights) > 20:
            ax.set_yscale("log")  # an untrained base model's perplexity would flatten everything else
        ax.set_title(metric)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=max(len(models), 1))
    return fig


def _delta_points(comparisons: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], slices: Sequence[str],
                  title: str) -> Any | None:
    """Checkpoint − other per slice with its 95% paired bootstrap CI as whiskers, against a zero line:
    the checkpoint differs significantly exactly where a whisker does not cross zero. None without CIs."""
    others = [m for m in MODELS if m in comparisons]
    cis = {(o, s, k): ci for o in others for s in slices for k in metrics
           if (ci := ((comparisons[o].get(s) or {}).get("ci") or {}).get(k)) is not None and all(finite(c) for c in ci)}
    metrics = [k for k in metrics if any(key[2] == k for key in cis)]
    if not metrics:
        return None
    fig, axes = _grid(len(metrics), title)
    for ax, metric in zip(axes, metrics, strict=True):
        for j, o in enumerate(others):
            pts = [(i + 0.15 * (j - (len(others) - 1) / 2), *cis[o, s, metric]) for i, s in enumerate(slices)
                   if (o, s, metric) in cis]
            if pts:
                xs, d, lo, hi = (np.array(c, dtype=float) for c in zip(*pts, strict=True))
                ax.errorbar(xs, d, yerr=[d - lo, hi - d], fmt="o", capsize=3, label=f"vs {o}",
                            color=f"C{MODELS.index(o)}")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(np.arange(len(slices)), slices, rotation=20, fontsize=7)
        ax.set_title(f"Δ {metric}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=max(len(others), 1))
    return fig


def _section(out: Path, name: str, section: Mapping[str, Any], metrics: Sequence[str], what: str) -> list[Path]:
    """`<name>slices.png` (values per slice and model) and `<name>deltas.png` (checkpoint − other with CIs)."""
    tables = section["tables"]
    metrics, slices = _shown(tables, metrics)
    if not metrics:
        return []
    paths = [out / f"{name}slices.png"]
    _grouped_bars(tables, metrics, slices, f"{what} per slice").savefig(paths[-1], dpi=100)
    fig = _delta_points(section.get("comparisons") or {}, metrics, slices,
                        f"{what}: checkpoint − other, whiskers: 95% paired bootstrap CI")
    if fig is not None:
        paths.append(out / f"{name}deltas.png")
        fig.savefig(paths[-1], dpi=100)
    return paths


def plot_folder(path: str | Path) -> str:
    """The MLflow artifact folder a plot goes to: online, offline and the loss curve each have their own,
    so the run's Artifacts tab groups them by what they measure."""
    stem = Path(path).stem
    return "plots/offline" if stem.startswith("offline_") else "plots/loss" if stem == "loss_curve" else "plots/online"


def plots(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """PNGs: online per-slice metric bars (`slices.png`) and deltas with paired bootstrap CIs
    (`deltas.png`), the same offline (`offline_slices.png`, `offline_deltas.png`), the loss curve and the
    reward distribution, each only when the report holds its data."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if "checkpoint" in (report.get("tables") or {}):
        paths += _section(out, "", report, report["metrics"], "online eval")
    offline = report.get("offline") or {}
    if offline.get("metrics") and "checkpoint" in offline.get("tables", {}):
        paths += _section(out, "offline_", offline, offline["metrics"],
                          "offline metrics (eval rows of the trained corpus version)")
    if report.get("loss_curve"):
        fig = Figure(figsize=(5, 3.4), layout="constrained")
        ax = fig.subplots()
        steps, losses = zip(*report["loss_curve"], strict=True)
        ax.plot(steps, losses, marker=".")
        ax.set(xlabel="step", ylabel="loss", title="training loss")
        paths.append(out / "loss_curve.png")
        fig.savefig(paths[-1], dpi=100)
    rewards = {m: v for m, v in report.get("rewards", {}).items() if v}
    if rewards:
        fig = Figure(figsize=(5, 3.4), layout="constrained")
        ax = fig.subplots()
        ax.hist(list(rewards.values()), bins=np.linspace(0, 1, 11), label=list(rewards))
        ax.set(xlabel="reward", ylabel="tasks", title="reward distribution")
        ax.legend(fontsize=7)
        paths.append(out / "rewards.png")
        fig.savefig(paths[-1], dpi=100)
    return paths
