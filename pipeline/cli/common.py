"""What every command group of the CLI shares: the consoles, the common options and the error exit.

One definition of `--home`, `--json` and the corpus `--root`, so every command spells, documents and
resolves them the same way (through `pipeline.settings`, like the Dagster resources), and one `fail`,
so every error reads `error: …` on ONE line of stderr and exits 1 (pipeline/cli/errors.py sends every
exception a command raises through it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from pipeline.models import TINY
from pipeline.settings import Settings, current_settings

if TYPE_CHECKING:  # polars-heavy: the CLI imports it only where a filter is compiled
    from pipeline.lake.filters import FilterError

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[str | None, typer.Option("--home", envvar="TRACEMILL_HOME", help="tracemill home folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
WorkspaceArg = Annotated[str, typer.Argument(help="Workspace name (`tracemill workspace list`).")]
RootOpt = Annotated[str | None, typer.Option("--root", envvar="TRACEMILL_CORPUS_ROOT",
                                             help="Corpus root (default: the profile's corpus_root, else "
                                                  "file://<home>/corpora).")]


def flat(text: str) -> str:
    """One line: newlines and runs of blanks collapse to one space."""
    return " ".join(str(text).split())


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` to stderr as ONE line (never wrapped at the terminal width, never read as
    rich markup: filters and paths hold brackets) and exit with `code` (1 unless a usage error says so)."""
    err.print(Text.assemble(("error:", "bold red"), " ", flat(message)), soft_wrap=True)
    raise typer.Exit(code)


def fail_filter(exc: FilterError, code: int = 1) -> NoReturn:
    """A filter error: the one `error:` line, then the filter (or the window around the culprit) with a
    caret under it: filters come from shells and YAML, and the caret shows where without counting."""
    err.print(Text.assemble(("error:", "bold red"), " ", flat(f"--filter: {exc.reason} (position {exc.position})")),
              soft_wrap=True)
    err.print(Text(f"  {exc.window}\n  {' ' * exc.offset}^"), soft_wrap=True)
    raise typer.Exit(code)


def note_unpinned(ref: str, version: str) -> None:
    """Say on stderr which version a corpus reference without `@vN` resolved to: commands that read a
    corpus (train, export) take its latest version then, and the log must still name what was read."""
    if "@" not in ref.rsplit("/", 1)[-1]:
        err.print(Text(f"note: --corpus {ref} names no version: using its latest, {ref}@{version} "
                       f"(pass {ref}@{version} to pin it)"), soft_wrap=True)


def settings(home: str | None = None, root: str | None = None) -> Settings:
    """The settings a command runs with: its `--home` and `--root` flags over the environment and the
    active profile; a misconfigured profile is a clean `error:` exit, not a traceback."""
    try:
        return current_settings(home=home, corpus_root=root)
    except ValueError as exc:
        fail(str(exc))


def check_base_model(name: str) -> None:
    """Fail before any work when `--base-model` names neither a folder here nor a model in the Hugging
    Face cache while the hub is offline (the CLI's default): transformers would otherwise fail only when
    the model loads, after ingest and curation, with a 240-line traceback."""
    if name == TINY or Path(name).expanduser().is_dir():
        return
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        fail(f"--base-model {name!r}: no such folder; pass a model folder, a Hugging Face id (org/name) or 'tiny'")
    if os.environ.get("HF_HUB_OFFLINE", "").upper() not in ("1", "ON", "YES", "TRUE"):
        return  # online: the hub answers for itself
    from huggingface_hub import try_to_load_from_cache

    if not any(isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", "tokenizer_config.json")):
        fail(f"--base-model {name!r} is not a folder here and not in the Hugging Face cache, and the hub is "
             f"offline: download it once with `tracemill --online …`, or pass a model folder or 'tiny'")
