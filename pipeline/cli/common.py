"""What every command group of the CLI shares: the consoles, the common options and the error exit.

One definition of `--home`, `--json` and the corpus `--root`, so every command spells, documents and
resolves them the same way (through `pipeline.settings`, like the Dagster resources), and one `fail`,
so every error reads `error: …` on stderr and exits 1.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

from pipeline.settings import Settings, current_settings

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[str | None, typer.Option("--home", envvar="TRACEMILL_HOME", help="tracemill home folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
RootOpt = Annotated[str | None, typer.Option("--root", envvar="TRACEMILL_CORPUS_ROOT",
                                             help="Corpus root (default: the profile's corpus_root, else "
                                                  "file://<home>/corpora).")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` to stderr and exit with `code` (1 unless a usage error says otherwise)."""
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however narrow the terminal
    raise typer.Exit(code)


def settings(home: str | None = None, root: str | None = None) -> Settings:
    """The settings a command runs with: its `--home` and `--root` flags over the environment and the
    active profile; a misconfigured profile is a clean `error:` exit, not a traceback."""
    try:
        return current_settings(home=home, corpus_root=root)
    except ValueError as exc:
        fail(str(exc))
