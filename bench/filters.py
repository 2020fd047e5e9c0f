"""Filter benchmark (issue 12, item 11): what a bad or a big filter costs, before and after.

    .venv/bin/python bench/filters.py [--items 80000] [--rows 200000] [--trajectories 2000]

* `in_list`: `trajectory_id in [...]` with `--items` ids (80,000 ids are ~1 MB of filter text) over a
  frame of `--rows`. Before: the expression the old compiler built, one `==` per item under one
  `any_horizontal` (34.5 s and 4.7 GB for 1 MB in the issue). After: `compile_filter` today (one
  `is_in`). Both run in their own process, so peak RSS is theirs alone; rows selected must agree.
* `typo`: `rewrd > 0` on a workspace with `--trajectories` landed. Before: the old CLI order, the
  whole lake refresh and then the filter error. After: `refresh_lake(check=...)`, which fails once
  the outcome table is read, before the trajectory ingest.
* `long_name`: a 100 KB unknown name, refused by the tokenizer's name limit.

Prints one line per figure with the before/after ratios, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("POLARS_MAX_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import polars as pl  # noqa: E402

from pipeline.lake.filters import FilterError, compile_filter  # noqa: E402


def _ids(n: int, step: int = 1) -> list[str]:
    return [f"t{i:07d}" for i in range(0, n * step, step)]


def in_list_case(which: str, items: int, rows: int) -> dict[str, Any]:
    """One side of the `in [...]` figure, in this (child) process: compile + filter seconds, peak RSS."""
    text = f"trajectory_id in [{', '.join(repr(i) for i in _ids(items))}]"
    df = pl.DataFrame({"trajectory_id": _ids(rows, 2)})
    start = time.perf_counter()
    if which == "before":  # what the old compiler built: one comparison per list item
        col = pl.col("trajectory_id")
        expr = pl.any_horizontal(pl.lit(False), *(col.eq(pl.lit(v)).fill_null(False) for v in _ids(items)))
    else:
        expr = compile_filter(text, df.schema)
    compiled = time.perf_counter() - start
    kept = df.filter(expr).height
    return {"chars": len(text), "compile_s": compiled, "total_s": time.perf_counter() - start, "kept": kept,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return orjson.loads(out.stdout.splitlines()[-1])


def typo_case(trajectories: int) -> dict[str, float]:
    """Seconds until `rewrd > 0` is reported: after the whole refresh (before) or before it (after)."""
    from pipeline.capture.workspace import Workspace
    from pipeline.demo.agents import populate
    from pipeline.lake.filters import apply_filter
    from pipeline.lake.stages import read_joined, refresh_lake

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open("bench", home=Path(tmp))
        populate(ws, days=["2026-11-20", "2026-11-21"], per_day=trajectories // 2, seed=1)
        for side in ("after", "before"):  # `after` first: it ingests nothing but the outcome table
            start = time.perf_counter()
            try:
                if side == "before":
                    refresh_lake(ws)
                    apply_filter(read_joined(ws), "rewrd > 0")
                else:
                    refresh_lake(ws, check=lambda columns: compile_filter("rewrd > 0", columns))
            except FilterError:
                out[f"typo_{side}_s"] = time.perf_counter() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=80_000)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--trajectories", type=int, default=2_000)
    ap.add_argument("--case", choices=["before", "after"], help=argparse.SUPPRESS)  # a child process
    args = ap.parse_args()
    if args.case:
        print(orjson.dumps(in_list_case(args.case, args.items, args.rows)).decode())
        return
    size = ("--items", str(args.items), "--rows", str(args.rows))
    after, before = _child("--case", "after", *size), _child("--case", "before", *size)
    assert after["kept"] == before["kept"], (after, before)
    figures: dict[str, Any] = {"items": args.items, "filter_chars": after["chars"], "rows": args.rows,
                               "kept": after["kept"], "polars": pl.__version__}
    for side, fig in (("before", before), ("after", after)):
        figures |= {f"in_list_{side}_s": fig["total_s"], f"in_list_{side}_compile_s": fig["compile_s"],
                    f"in_list_{side}_peak_mb": fig["peak_rss_mb"]}
    figures["in_list_speedup"] = before["total_s"] / after["total_s"]
    figures["in_list_memory_ratio"] = before["peak_rss_mb"] / after["peak_rss_mb"]
    figures |= typo_case(args.trajectories)
    figures["typo_speedup"] = figures["typo_before_s"] / figures["typo_after_s"]
    start = time.perf_counter()
    try:
        compile_filter("x" * 100_000 + " > 0", {"reward": pl.Float64})
    except FilterError:
        figures["long_name_error_s"] = time.perf_counter() - start
    for key, value in figures.items():
        print(f"{key:28} {value:.4f}" if isinstance(value, float) else f"{key:28} {value}")
    print(orjson.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}).decode())


if __name__ == "__main__":
    main()
