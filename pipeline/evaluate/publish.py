"""Publish an evaluation report: report.md, report.json and the PNG plots on disk, the checkpoint's
"all" metrics on the MLflow run that trained it, and the files as its artifacts: the report under
`online_eval/`, the plots under `plots/online/`, `plots/offline/` and `plots/loss/` (`plots.plot_folder`).

Why not in `compare`: comparing is pure numbers; publishing needs the renderers, which themselves
read the verdict vocabulary. Keeping it here keeps `compare`, `render` and `plots` free of each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.evaluate.plots import plot_folder, plots
from pipeline.evaluate.render import markdown_report
from pipeline.evaluate.verdict import finite
from pipeline.jsonio import dumps_json


def log_plots(tracker: Any, run_id: str, files: Iterable[str | Path]) -> None:
    """Each PNG into its own artifact folder of the run (online, offline, loss)."""
    for f in files:
        if str(f).endswith(".png"):
            tracker.log_artifact(f, plot_folder(f), run_id=run_id)


def log_report(tracker: Any, run_id: str, report: Mapping[str, Any], out_dir: str | Path,
               prefix: str = "online_") -> list[Path]:
    """Write report.md, report.json and the plots to `out_dir`; log the checkpoint's "all" metrics to
    the run that trained it (counts become tags there, see `MlflowTracker.log_metrics`) and the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown_report(report))
    (out / "report.json").write_text(dumps_json(report, indent=1, default=str))
    files = [out / "report.md", out / "report.json", *plots(report, out)]
    metrics = {f"{prefix}{k}": v for k, v in report["tables"]["checkpoint"]["all"].items()
               if finite(v) and k not in ("seed", "max_steps")}
    tracker.log_metrics_to_run(run_id, metrics)
    for f in files[:2]:
        tracker.log_artifact(f, "online_eval", run_id=run_id)
    log_plots(tracker, run_id, files)
    return files
