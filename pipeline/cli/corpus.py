"""`tracemill snapshot` and `tracemill corpus …`: versioned corpora from the terminal, no orchestrator needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from pipeline.cli.common import (
    HomeOpt,
    JsonOpt,
    RootOpt,
    check_base_model,
    console,
    err,
    fail,
    note_unpinned,
    settings,
)
from pipeline.cli.errors import STORE_FIX
from pipeline.storage import as_path

corpus_app = typer.Typer(help="Inspect, compare and export versioned corpora.", no_args_is_help=True)


def _root(root: str | None, home: str | None) -> str:
    """The corpus root these flags select (flag > env > profile > file://<home>/corpora)."""
    return settings(home, root).corpus_root_url


def _check_bucket(to: str, url: str) -> None:
    """An S3 corpus whose bucket is missing or unreachable fails before the work, not at the write
    (where Deeplake also logs its own line): s3fs answers from the same AWS_* variables Deeplake reads."""
    if not url.startswith("s3://"):
        return
    bucket = "s3://" + url.removeprefix("s3://").split("/", 1)[0]
    if not as_path(bucket).exists():
        fail(f"--to {to!r}: bucket {bucket} does not exist or cannot be reached: {STORE_FIX}")


def _wait_policy(text: str) -> dict[str, str]:
    """`--wait 'coverage=0.95,max=6h'` → its key/value pairs (the WaitPolicy model checks the values)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    bad = [part for part in parts if "=" not in part]
    if bad:
        fail(f"--wait {text!r}: {bad[0]!r} is not key=value; write e.g. --wait 'coverage=0.95,max=6h'")
    return dict(part.split("=", 1) for part in parts)


def snapshot(
    workspace: Annotated[str, typer.Argument(help="Workspace to snapshot.")],
    to: Annotated[str, typer.Option("--to", help="Target corpus, e.g. deeplake://org/sft.")],
    filter: Annotated[str, typer.Option("--filter", help="Filter expression, e.g. 'reward>0'.")] = "",
    format: Annotated[str, typer.Option("--format", help="sft | dpo | kto | rl")] = "sft",
    wait: Annotated[str, typer.Option("--wait", help="Wait policy 'coverage=0.95,max=6h'.")] = "",
    base_model: Annotated[str, typer.Option("--base-model", help="Tokenizer: HF id/path, or 'tiny'.")] = "tiny",
    eval_fraction: Annotated[float, typer.Option(help="Share of task ids held out as eval.")] = 0.2,
    no_redact: Annotated[bool, typer.Option("--no-redact", help="Skip PII/secret redaction.")] = False,
    allow_empty: Annotated[bool, typer.Option("--allow-empty",
                                              help="Record a version even when no row is left.")] = False,
    home: HomeOpt = None, root: RootOpt = None, json: JsonOpt = False,
):
    """Freeze a filtered, curated, tokenized view of a workspace as a new corpus version (vN)."""

    from pipeline.capture.workspace import Workspace
    from pipeline.config import CorpusSpec, WaitPolicy
    from pipeline.corpus import stages
    from pipeline.corpus.lease import LeaseHeld, LeaseLost
    from pipeline.corpus.store import resolve_corpus_url
    from pipeline.lake.filters import compile_filter
    from pipeline.lake.stages import refresh_lake
    from pipeline.models import resolve_model
    from pipeline.progress import report, stage, stage_bars
    from pipeline.train.base_model import prepare_base_model

    try:  # a bad --to fails here, not after ingest and curation
        _check_bucket(to, resolve_corpus_url(to, _root(root, home)))
    except ValueError as exc:
        fail(f"--to {to!r}: {exc}")
    check_base_model(base_model)

    # Bad input raises (FilterError, ValidationError, WorkspaceNotFound …): the app's one error exit
    # (`pipeline.cli.errors`) prints it as one line, or its traceback under --debug.
    compile_filter(filter)
    ws = Workspace.open(workspace, home=home, create=False)
    spec = CorpusSpec(name="cli", format=format, filter=filter, target=to, eval_fraction=eval_fraction,
                      redact=not no_redact, wait=WaitPolicy(**_wait_policy(wait)))
    # one row per stage on stderr (count, elapsed, ETA): ingest and curate here, tokenize and write are
    # declared by the library where they run (`pipeline.progress.stage`)
    with stage_bars(err, enabled=not json):
        with stage("ingest", unit="days") as note:
            # the filter against the lake's columns, before the trajectory ingest (minutes on a big landing area)
            lake_counts = refresh_lake(ws, check=lambda columns: compile_filter(filter, columns)).as_dict()
            note(f"{lake_counts['trajectories']} trajectories joined, {lake_counts['quarantined']} quarantined")
        with stage("curate", unit="trajectories") as note:
            _, cstats = stages.curate_corpus(ws, spec)
            report(cstats.input_rows, cstats.input_rows)
            note(f"kept {cstats.kept} ({cstats.after_filter} passed the filter)")
        models = Path(resolve_model("tiny", (Path(home) if home else ws.home) / "models")).parent
        if base_model == "tiny":
            prepare_base_model(ws, "tiny", models)
        try:
            info = stages.snapshot_corpus(ws, spec, _root(root, home), base_model, models, allow_empty)
        except (LeaseHeld, LeaseLost) as exc:  # another snapshot of this corpus is running
            fail(str(exc))
        if info.mode == "empty":  # inside: the rows go, the reason stays one line
            fail(info.lineage["empty"]["reason"])
    result = {"ref": info.ref, "version": info.version, "created": info.created, "mode": info.mode,
              "rows": info.row_count, "appended": info.appended, "content_hash": info.content_hash,
              "lake": lake_counts, "curation": cstats.as_dict(), "wait": info.lineage.get("wait")}
    if json:
        sys.stdout.write(orjson.dumps(result, default=str).decode() + "\n")
        return
    verb = {"waiting": "waiting for outcomes", "unchanged": "unchanged"}.get(info.mode, "new version")
    console.print(f"[bold]{info.ref}[/]  {verb}: {info.row_count} rows ({info.mode}, +{info.appended})")
    console.print(f"kept {cstats.kept} of {cstats.input_rows} trajectories ({cstats.after_filter} passed the filter); dropped {dict(cstats.dropped)}; "
                  f"redacted {dict(cstats.redactions)}")
    if info.mode == "waiting":
        console.print(f"[yellow]{info.lineage['wait']['reason']}[/]")


@corpus_app.command("list")
def corpus_list(ref: Annotated[str, typer.Argument(help="Corpus, e.g. org/sft.")], home: HomeOpt = None,
                root: RootOpt = None, json: JsonOpt = False):
    """Versions of a corpus with their row counts, filters and hashes."""
    from pipeline.corpus.store import CorpusNotFound, list_versions

    try:
        versions = list_versions(ref, root=_root(root, home))
    except CorpusNotFound as exc:
        fail(str(exc))
    if json:
        sys.stdout.write(orjson.dumps(versions, default=str).decode() + "\n")
        return
    table = Table("version", "rows", "mode", "filter", "content hash", "created")
    for v in versions:
        table.add_row(v["version"], str(v.get("row_count")), str(v.get("mode", "")), str(v.get("filter", "")),
                      str(v.get("content_hash", ""))[:12], str(v.get("created_at", ""))[:19])
    console.print(table)


@corpus_app.command("show")
def corpus_show(ref: Annotated[str, typer.Argument(help="org/sft@v3 (latest when no @).")], home: HomeOpt = None,
                root: RootOpt = None, json: JsonOpt = False,
                rows: Annotated[int, typer.Option(help="Rows to preview.")] = 5):
    """Lineage, split counts and a preview of one version."""
    from pipeline.corpus.store import open_corpus

    try:
        c = open_corpus(ref, root=_root(root, home))
    except LookupError as exc:
        fail(str(exc))
    df = c.to_polars()
    splits = dict(df["split"].value_counts().iter_rows()) if "split" in df.columns else {}
    out = {"ref": f"{c.url}@{c.version}", "rows": len(c), "splits": splits, "lineage": c.lineage}
    if json:
        sys.stdout.write(orjson.dumps(out, default=str).decode() + "\n")
        return
    console.print(f"[bold]{out['ref']}[/]  {len(c)} rows  splits {splits}")
    for k in ("filter", "format", "content_hash", "parent", "tokenizer", "source_partitions", "created_at"):
        if k in c.lineage:
            console.print(f"  {k}: {c.lineage[k]}")
    cols = [x for x in ("trajectory_id", "task_id", "agent", "reward", "split", "n_tokens") if x in df.columns]
    table = Table(*cols)
    for r in df.head(rows).iter_rows(named=True):
        table.add_row(*[str(r[x]) for x in cols])
    console.print(table)


@corpus_app.command("diff")
def corpus_diff(a: Annotated[str, typer.Argument(help="The older version, e.g. org/sft@v1.")],
                b: Annotated[str, typer.Argument(help="The newer version of the same corpus: org/sft@v2, or just v2.")],
                home: HomeOpt = None, root: RootOpt = None, json: JsonOpt = False):
    """What changed between two versions of one corpus (rows added, removed, changed)."""
    from pipeline.corpus.store import diff_versions

    try:
        d = diff_versions(a, b, root=_root(root, home))
    except LookupError as exc:
        fail(str(exc))
    if json:
        sys.stdout.write(orjson.dumps(d, default=str).decode() + "\n")
        return
    for k, v in d.items():
        console.print(f"{k}: {v}")


@corpus_app.command("export")
def corpus_export(
    ref: Annotated[str, typer.Argument(help="Corpus version, e.g. org/sft@v3; without @vN the latest (named on "
                                            "stderr).")],
    out: Annotated[Path, typer.Option("--out", help="File (jsonl, parquet) or folder (hf) to write.")],
    format: Annotated[str, typer.Option("--format", help="hf (a `datasets.load_from_disk` folder) | parquet | "
                                                         "jsonl (one row per line).")] = "jsonl",
    split: Annotated[str | None, typer.Option("--split", help="Only this split: train | eval.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    home: HomeOpt = None, root: RootOpt = None, json: JsonOpt = False,
):
    """Export a corpus version in TRL's dataset shapes: sft `messages` + `tools`, dpo `prompt`/`chosen`/
    `rejected`, kto `prompt`/`completion`/`label`, rl `prompt` + `ground_truth` (ids, rewards and `split` ride
    along), ready for `datasets.load_from_disk`, `load_dataset("parquet"|"json", …)` and TRL's trainers."""
    import shutil

    from pipeline.corpus.export import TRL_COLUMNS, corpus_format, write_export
    from pipeline.corpus.store import open_corpus

    if format not in ("hf", "parquet", "jsonl"):
        fail(f"--format {format!r}: choose hf, parquet or jsonl")
    if split not in (None, "train", "eval"):
        fail(f"--split {split!r}: choose train or eval")
    if out.exists() and not overwrite:
        fail(f"--out {out} already exists: pass --overwrite to replace it, or another path")
    c = open_corpus(ref, root=_root(root, home))  # a missing corpus or version: the one-line exit
    note_unpinned(ref, c.version)
    shape = corpus_format(c)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    rows = write_export(c, out, format, split=split)  # type: ignore[arg-type]
    result = {"ref": f"{c.url}@{c.version}", "out": str(out), "format": format, "rows": rows, "shape": shape,
              "columns": [col for col in TRL_COLUMNS[shape] if col in c.columns or col == "tools"], "split": split}
    if json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return
    console.print(f"wrote {rows} {shape} rows ({', '.join(result['columns'])}) of [bold]{result['ref']}[/] "
                  f"to {out} ({format})")
