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


def _grouped_bars(tables: Mapping[str, Mapping[str, Mapping[str, Any]]], metrics: Sequence[str],
                  comparisons: Mapping[str, Mapping[str, Any]] | None, title: str) -> Any:
    """One subplot per metric, one group of bars per slice, one bar per model. Where a comparison holds a
    paired bootstrap CI of (checkpoint − other), the other model's bar carries it as an error bar: the
    checkpoint differs significantly exactly when its bar's top falls outside that bar's whiskers."""
    from matplotlib.figure import Figure

    models = [m for m in MODELS if m in tables]
    slices = list(tables["checkpoint"])
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    width = 0.8 / len(models)
    for ax, metric in zip(axes, metrics, strict=False):
        heights: list[float] = []
        shown: list[float] = []  # bar tops and whisker ends
        for j, m in enumerate(models):
            xs, hs, err = [], [], [[], []]
            for i, s in enumerate(slices):
                v = tables[m].get(s, {}).get(metric)
                if not finite(v):
                    continue  # a missing value draws no bar, rather than a bar at 0 that reads as a result
                ci = ((comparisons or {}).get(m, {}).get(s) or {}).get("ci", {}).get(metric)
                lo_err = hi_err = 0.0
                if ci is not None and all(finite(c) for c in ci):
                    d, lo, hi = ci  # the other's value is checkpoint − d: its interval is checkpoint − [hi, lo]
                    lo_err, hi_err = max(hi - d, 0.0), max(d - lo, 0.0)
                    shown += [v - lo_err, v + hi_err]
                xs.append(i + j * width)
                hs.append(float(v))
                err[0].append(lo_err)
                err[1].append(hi_err)
            heights += hs
            shown += hs
            yerr = err if any(err[0]) or any(err[1]) else None
            ax.bar(xs, hs, width, yerr=yerr, capsize=3 if yerr else 0, label=m, color=f"C{MODELS.index(m)}")
        ax.set_xticks(np.arange(len(slices)) + width * (len(models) - 1) / 2, slices, rotation=20, fontsize=7)
        if _is_rate(heights):  # rates on a common scale, also when they are all zero
            ax.set_ylim(min([0.0, *shown]), max([1.05, *shown]))
        elif metric == "perplexity" and shown and min(shown) > 0 and max(shown) / min(shown) > 20:
            ax.set_yscale("log")  # an untrained base model's perplexity would flatten everything else
        ax.set_title(metric)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=max(len(models), 1))
    fig.supxlabel(title, fontsize=8)
    return fig


def plots(report: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """PNGs: online per-slice metric bars (`slices.png`), offline per-slice metric bars with paired
    bootstrap error bars (`offline_slices.png`), the loss curve and the reward distribution, each only
    when the report holds its data."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tables = report.get("tables") or {}
    if "checkpoint" in tables:
        slices = list(tables["checkpoint"])
        metrics = [k for k in report["metrics"] if any(k in tables["checkpoint"][s] for s in slices)]
        if metrics:
            fig = _grouped_bars(tables, metrics, report.get("comparisons"),
                                "online eval per slice; whiskers: 95% paired bootstrap CI of checkpoint − model")
            paths.append(out / "slices.png")
            fig.savefig(paths[-1], dpi=100)
    offline = report.get("offline") or {}
    if offline.get("metrics") and "checkpoint" in offline.get("tables", {}):
        fig = _grouped_bars(offline["tables"], offline["metrics"], offline.get("comparisons"),
                            "offline metrics per slice (eval rows of the trained corpus version); "
                            "whiskers: 95% paired bootstrap CI of checkpoint − model")
        paths.append(out / "offline_slices.png")
        fig.savefig(paths[-1], dpi=100)
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
