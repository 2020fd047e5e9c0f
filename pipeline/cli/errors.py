"""The one place the command line turns an exception into its exit: ONE line on stderr, exit 1.

Why one mechanism and not a try/except per command: the mistakes a user makes (a misspelled filter
column, a missing corpus version, a bad `--to`, a model that is not on this machine) surface deep in
the library, often after minutes of work, and each used to print a 40-300 line traceback above a
good last line. `OneLineErrors` wraps every command of the app: a user error prints `error: <message>`;
any other exception is a fault of tracemill and prints its type and message on one line with a pointer
to `--debug`, which re-raises so the full traceback shows. What counts as a user error: `UserError`
(pipeline/errors.py), validation errors (`ValueError`, pydantic's `ValidationError`, `FilterError`),
the library's `LookupError`s (`CorpusNotFound`, `WorkspaceNotFound` …; not `KeyError`/`IndexError`,
which are bugs), `OSError` (a file, a disk, a network) and the object store's refusals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click
import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from pipeline.cli.common import fail, fail_filter, flat
from pipeline.errors import UserError
from pipeline.lake.filters import FilterError
from pipeline.schema import format_validation_error

# Deeplake raises the object store's refusals as its own types, or as a KeyError whose text names the store.
_STORE_PREFIXES = ("[S3]", "[GCS]", "[GS]", "[Azure]", "[AZ]")
STORE_FIX = "check the --to/--root URL, that the bucket exists, the network and the storage credentials " \
             "(AWS_* variables; docs/operations.md)"


def _store_refusal(exc: BaseException) -> str | None:
    """The object store's message, when Deeplake reports a storage failure (bucket, network, credentials)."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    if type(exc).__module__.startswith("deeplake") or text.startswith(_STORE_PREFIXES):
        return flat(text.split(" request_id=")[0])
    return None


def user_message(exc: BaseException) -> str | None:
    """The one-line message for a mistake the user can fix, or None for a fault of tracemill itself."""
    if (store := _store_refusal(exc)) is not None:
        return f"corpus storage refused: {store}: {STORE_FIX}"
    if isinstance(exc, FilterError):
        return f"--filter {flat(exc.expr)!r}: {flat(exc.reason)} (position {exc.position})"
    if isinstance(exc, ValidationError):
        return f"invalid option: {flat(format_validation_error(exc))}"
    if isinstance(exc, KeyError | IndexError):
        return None
    if isinstance(exc, UserError | ValueError | LookupError | OSError):
        return flat(str(exc)) or type(exc).__name__
    return None


def describe(exc: BaseException) -> str:
    """What `error:` is followed by: the user's fix, or the fault and how to see its traceback."""
    message = user_message(exc)
    if message is not None:
        return message
    return (f"{type(exc).__name__}: {flat(str(exc))} (a fault in tracemill, not in your input: "
            f"rerun with `tracemill --debug …` for the traceback and report it)")


def hub_environment(online: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that keep the Hugging Face hub offline, unless `--online` or HF_HUB_OFFLINE is set
    explicitly: a misspelled model id must fail at once, not after five network retries."""
    if online or "HF_HUB_OFFLINE" in environ:
        return {}
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class OneLineErrors(TyperGroup):
    """The app's root group: every command runs inside `invoke`, so this is the single exit for errors.
    `--debug` (or TRACEMILL_DEBUG=1) is the root callback's option, read from the root context."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # already an exit: `fail`, a usage error, Ctrl-C
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            if isinstance(exc, FilterError):
                fail_filter(exc)
            fail(describe(exc))


def apply_hub_environment(online: bool) -> None:
    """Set the offline variables for this process and the ones it starts (training workers, backfill)."""
    os.environ.update(hub_environment(online, os.environ))
