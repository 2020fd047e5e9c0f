"""`tracemill train …` and `tracemill eval …`: train from a corpus version, report on a checkpoint.

A `--corpus` without `@vN` trains on the latest version and says which on stderr (the run is tagged
with the exact version either way), so a reader of the log knows what was trained on."""

from __future__ import annotations

import json as stdlib_json  # `json` is the --json option below
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

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
from pipeline.config import TrainSettings
from pipeline.jsonio import finite_or_none
from pipeline.progress import progress_bar
from pipeline.train.checkpoints import LATEST_FILE, register
from pipeline.train.methods import METHODS, TrainSplit, method_for

train_app = typer.Typer(help="Fine-tune from a corpus version (org/name@vN; the latest, named on stderr, without @vN).",
                         no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate checkpoints and show their reports.", no_args_is_help=True)

def _run(fmt: str, corpus: str, base_model: str, out: Path | None, max_steps: int, learning_rate: float | None,
         batch_size: int, lora: bool | None, seed: int, tools_in_prompt: bool, home: str | None, root: str | None,
         track: bool, devices: int = 1) -> None:
    """Train the method for `fmt` corpora on a pinned version, as the checkpoint asset does (same method
    table, same recipe mapping and defaults; SFT streams from the version), then register the checkpoint."""
    from pipeline.corpus.store import open_corpus

    if devices < 1 or batch_size % devices:
        fail(f"--batch-size ({batch_size}, sequences per step) must be a multiple of --devices ({devices})")
    check_base_model(base_model)
    resolved = settings(home, root)  # the same corpus root and MLflow URI as the Dagster resources
    hd = resolved.home
    try:
        c = open_corpus(corpus, root=resolved.corpus_root_url)
    except LookupError as exc:
        fail(str(exc))
    note_unpinned(corpus, c.version)
    have = c.lineage.get("format", "sft")
    if have != fmt:
        fail(f"{corpus} holds {have} rows, not {fmt}: use `tracemill train {method_for(have).name}` "
             f"or snapshot with --format {fmt}")
    if base_model == "tiny":
        base_model = str(hd / "models" / "tiny")
        if not (Path(base_model) / "config.json").exists():
            fail("no tiny model yet: run `make demo` or `tracemill snapshot` first, or pass --base-model PATH_OR_ID")
    method = method_for(fmt)
    split = TrainSplit(c, f"{c.url}@{c.version}", tools_in_prompt=tools_in_prompt)
    out = out or hd / "checkpoints" / "cli" / f"{fmt}-{c.version}"
    lr = {} if learning_rate is None else {"learning_rate": learning_rate}  # else the corpus spec's default
    train_settings = TrainSettings(max_steps=max_steps, batch_size=batch_size, seed=seed, devices=devices,
                                   lora="auto" if lora is None else lora, **lr)
    recipe = method.make_recipe(train_settings, base_model, str(out))
    tracker = None
    if track:
        from pipeline.tracking import MlflowTracker

        tracker = MlflowTracker(resolved.tracking_uri)
    tags = {"corpus": f"{c.url}@{c.version}", "content_hash": c.lineage.get("content_hash", ""), "source": "cli"}
    console.print(f"training {fmt} on [bold]{c.url}@{c.version}[/] ({len(split)} train rows) from {base_model}"
                  + (f" on {devices} devices" if devices > 1 else ""))
    with progress_bar(f"{fmt} steps"):
        res = method.train(split, recipe, tracker, tags)
    console.print(f"saved [bold]{res.checkpoint_dir}[/]: {res.steps} steps, loss {res.losses[0]:.3f} → "
                  f"{res.final_loss:.3f}, {res.tokens_per_second:,.0f} tokens/s"
                  + (f", MLflow run {res.mlflow_run_id}" if res.mlflow_run_id else " (not tracked)"))
    if tracker is not None and res.mlflow_run_id:
        reg = register(tracker, res.mlflow_run_id, res.checkpoint_dir, c.url.rstrip("/").rsplit("/", 1)[-1], tags)
        if reg.model_uri:
            console.print(f"registered as [bold]{reg.model_uri}[/]")
        else:
            err.print(f"[yellow]checkpoint kept, but not registered in MLflow:[/] {reg.registration_error}")


def _command(name: str, fmt: str):
    example = f"org/{fmt}@v3"  # a corpus of this method's format: `train dpo` needs dpo rows

    def command(
        corpus: str,  # annotated below: the help names this method's corpus
        base_model: Annotated[str, typer.Option("--base-model", help="HF model id or path ('tiny': the local one).")] = "tiny",
        out: Annotated[Path | None, typer.Option("--out", help="Checkpoint folder (default: "
                                                 "<home>/checkpoints/cli/<format>-<version>).")] = None,
        max_steps: Annotated[int, typer.Option("--max-steps", help="Optimizer steps to train for.")] = 100,
        learning_rate: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the method's, "
                                                            "as in a corpus spec's train: section).")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per optimizer step "
                                                "(split across --devices).")] = 8,
        lora: Annotated[bool | None, typer.Option("--lora/--no-lora", help="Train LoRA adapters (merged on save) or "
                                                  "the full model; default: as train.lora: auto (LoRA above 1B "
                                                  "parameters).")] = None,
        seed: Annotated[int, typer.Option(help="Random seed (data order, initialisation, sampling).")] = 0,
        tools_in_prompt: Annotated[bool, typer.Option(help="Render tool definitions into prompts.")] = False,
        track: Annotated[bool, typer.Option(help="Log the run to MLflow and register the checkpoint.")] = True,
        devices: Annotated[int, typer.Option("--devices", min=1, help="GPUs (processes) to train on; > 1 "
                                             "starts them with `accelerate launch` (DDP).")] = 1,
        home: HomeOpt = None, root: RootOpt = None,
    ):
        _run(fmt, corpus, base_model, out, max_steps, learning_rate, batch_size, lora, seed, tools_in_prompt,
             home, root, track, devices)

    # `from __future__ import annotations` makes annotations strings read in the module's globals, so the
    # one that depends on this method is set as an object
    command.__annotations__["corpus"] = Annotated[str, typer.Option(
        "--corpus", help=f"Corpus version of {fmt} rows, e.g. {example}; without @vN its latest version is "
                         "used and named on stderr.")]
    command.__doc__ = (f"{name.upper()} fine-tune from a {fmt} corpus version, with a progress bar and MLflow "
                       f"tracking.\n\nExample: tracemill train {name} --corpus {example} --max-steps 200")
    return command


for _method in METHODS:  # one `tracemill train <method>` command per training method
    train_app.command(_method.name)(_command(_method.name, _method.corpus_format))


def _report_folder(checkpoint: Path) -> Path:
    """The checkpoint folder an argument names: itself, or the path a corpus's LATEST file holds (the file
    itself or the `checkpoints/<corpus>` folder holding it), so the promoted checkpoint needs no copying."""
    latest = checkpoint / LATEST_FILE if checkpoint.is_dir() and not (checkpoint / "eval").exists() else checkpoint
    if latest.name != LATEST_FILE or not latest.is_file():
        return checkpoint
    named = Path(latest.read_text().strip())
    if not named.is_absolute() and not named.exists():
        named = latest.parent / named.name  # written relative to another working directory
    if not named.is_dir():
        fail(f"{latest} names {named}, which does not exist: re-run eval_<corpus> to promote a checkpoint again")
    return named


def _read_report(path: Path) -> dict:
    """report.json as a dict; one written before reports held null for missing numbers (NaN, which is not
    JSON) is still read, with those numbers as None."""
    data = path.read_bytes()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return finite_or_none(stdlib_json.loads(data))
    except ValueError as exc:
        fail(f"{path} is not valid JSON ({exc}): re-run eval_<corpus> to write it again")


@eval_app.command("report")
def eval_report(checkpoint: Annotated[Path, typer.Argument(
                    help="Checkpoint folder (evaluated by eval_<corpus>), or checkpoints/<corpus>/LATEST.")],
                json: JsonOpt = False):
    """The checkpoint's eval report in the terminal: slices × metrics vs base and previous."""
    from pipeline.evaluate.render import rich_table

    checkpoint = _report_folder(checkpoint)
    path = checkpoint / "eval" / "report.json"
    if not path.exists():
        fail(f"no report at {path}: materialize the eval_<corpus> asset (or run `make demo`) first")
    report = _read_report(path)
    if json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
        return
    console.print(rich_table(report))
    console.print(f"verdict vs {report.get('verdict_against')}: [bold]{report.get('verdict')}[/]")
    offline = checkpoint / "eval" / "offline.json"
    if offline.exists():
        console.print("offline: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in orjson.loads(offline.read_bytes()).items()))
