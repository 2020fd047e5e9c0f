"""The eval report as text: Markdown for Dagster metadata and MLflow, a rich table for the terminal.
Both render the one dict `eval_report.build_report` gathers, from the same header and rows."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.evaluate.verdict import MODELS, OFFLINE_PRIMARY, finite, verdict_words


def _num(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # counts
    return f"{v:.3f}" if finite(v) else "–"


def _delta(cmp: Mapping[str, Any] | None, metric: str) -> str:
    if not cmp or not finite(cmp["deltas"].get(metric)) or metric in ("n_tasks", "n_rows"):
        return "–"  # a missing number is NaN in memory and null once read back from report.json
    text = f"{cmp['deltas'][metric]:+.3f}"
    if finite((cmp["ci"].get(metric) or [None, None])[1]):
        _, lo, hi = cmp["ci"][metric]
        text += f" [{lo:+.3f}, {hi:+.3f}]"
    return text


def _rows(report: Mapping[str, Any], count: str = "n_tasks") -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and (slice, cells) rows shared by the Markdown and the rich renderings, for the online
    report or its offline section (same keys: tables, comparisons, metrics)."""
    present = [m for m in MODELS if m in report["tables"]]
    header = ["metric"] + [c for m in present for c in ([m] if m == "checkpoint" else [m, f"Δ vs {m}"])]
    rows = []
    for name in report["tables"]["checkpoint"]:
        for metric in [*report["metrics"], count]:
            cells = [metric]
            for m in present:
                cells.append(_num(report["tables"][m].get(name, {}).get(metric)))
                if m != "checkpoint":
                    cells.append(_delta(report["comparisons"].get(m, {}).get(name), metric))
            rows.append((name, cells))
    return header, rows


def _verdict_cell(cmp: Mapping[str, Any] | None, metric: str) -> str:
    """Plain words for one comparison: a verdict only where a CI exists, otherwise the bare delta."""
    if not cmp or metric not in cmp["deltas"]:
        return "–"
    delta, ci = _delta(cmp, metric), cmp["ci"].get(metric)
    if ci is not None and finite(ci[1]):
        return f"**{verdict_words(metric, ci[1], ci[2])}** ({delta})"
    return f"not tested, no per-example values ({delta})"


def verdict_markdown(report: Mapping[str, Any]) -> list[str]:
    """'Is the new checkpoint better?': per slice, online and offline, against base and previous."""
    sections = [("online", report, report["primary"])]
    if report.get("offline"):
        sections.append(("offline", report["offline"], report["offline"]["primary"]))
    others = [o for o in ("base", "previous") if any(o in sec["comparisons"] for _, sec, _ in sections)]
    lines = ["### Is the new checkpoint better?", ""]
    if not others:
        return lines + ["_No base model or previous checkpoint results: nothing to compare with._", ""]
    lines += ["| eval | slice | metric | " + " | ".join(f"vs {o}" for o in others) + " |",
              "|" + "---|" * (3 + len(others))]
    for kind, sec, primary in sections:
        for name, row in sec["tables"]["checkpoint"].items():  # offline: a slice without answers falls back
            metric = primary if kind == "online" else next((k for k in OFFLINE_PRIMARY if k in row), primary)
            cells = [_verdict_cell(sec["comparisons"].get(o, {}).get(name), metric) for o in others]
            lines.append(f"| {kind} | {name} | {metric} | " + " | ".join(cells) + " |")
    return lines + ["", "better/worse: the 95% paired bootstrap CI of the difference excludes 0.", ""]


def markdown_report(report: Mapping[str, Any], title: str = "Checkpoint evaluation") -> str:
    """Markdown for Dagster metadata / MLflow: a table per slice, deltas with 95% bootstrap CIs."""
    header, rows = _rows(report)
    lines = [f"## {title}", ""]
    if report.get("verdict"):
        lines += [f"**Verdict vs {report['verdict_against']}** ({report['primary']}): **{report['verdict']}**", ""]
    for m, info in report["models"].items():
        lines.append(f"- {m}: `{info.get('checkpoint') or info.get('agent')}`")
    lines += ["", *verdict_markdown(report)]
    current = None
    for name, cells in rows:
        if name != current:
            current = name
            lines += ["", f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Δ = checkpoint − other, [95% paired bootstrap CI] for per-task means."]
    if report.get("offline"):
        header, rows = _rows(report["offline"], "n_rows")
        lines += ["", "### Offline metrics per slice vs base and previous", "",
                  "| slice | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 1)]
        lines += [f"| {name if i == 0 or rows[i - 1][0] != name else ''} | " + " | ".join(cells) + " |"
                  for i, (name, cells) in enumerate(rows)]
    return "\n".join(lines) + "\n"


def images_markdown(paths: Iterable[str | Path]) -> str:
    """PNGs inlined as `data:` URIs: Dagster's UI renders Markdown metadata, images included, but cannot
    open a path on the machine that ran the step, so a path alone shows a person nothing."""
    return "\n".join(f"![{Path(p).stem}](data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()})\n"
                     for p in paths)


def rich_table(report: Mapping[str, Any]) -> Any:
    """The same numbers as `markdown_report`, as a `rich.table.Table` for the terminal."""
    from rich.table import Table

    header, rows = _rows(report)
    title = f"verdict vs {report['verdict_against']}: {report['verdict']}" if report.get("verdict") else None
    table = Table(title=title)
    for col in ["slice"] + header:
        table.add_column(col, justify="left" if col in ("slice", "metric") else "right")
    for i, (name, cells) in enumerate(rows):
        first = i == 0 or rows[i - 1][0] != name
        last = i == len(rows) - 1 or rows[i + 1][0] != name
        table.add_row(name if first else "", *cells, end_section=last)
    return table
