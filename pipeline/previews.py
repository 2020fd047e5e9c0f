"""Small presentation helpers shared by the CLI and the Dagster metadata: previews people can read."""

from __future__ import annotations

from typing import Any

import polars as pl


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def markdown_table(df: pl.DataFrame, columns: list[str] | None = None, limit: int = 8, width: int = 48) -> str:
    """A Markdown preview of the first rows (what Dagster's UI renders for MetadataValue.md)."""
    cols = [c for c in (columns or df.columns) if c in df.columns]
    if not cols:
        return "_(no columns)_"
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(_cell(r[c], width) for c in cols) + " |\n"
                   for r in df.head(limit).select(cols).iter_rows(named=True))
    more = f"\n_{df.height - limit} more rows_" if df.height > limit else ""
    return head + (body or "| " + " | ".join("" for _ in cols) + " |\n") + more


def counts_table(counts: dict[str, Any], key: str = "name", value: str = "count") -> str:
    if not counts:
        return "_(none)_"
    rows = "".join(f"| {k} | {v} |\n" for k, v in counts.items())
    return f"| {key} | {value} |\n|---|---|\n{rows}"
