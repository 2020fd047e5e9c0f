"""The one exception family for mistakes a user can fix (a misspelled name, a missing version, a model
that is not on this machine), as opposed to faults of tracemill itself.

Why a root module: any room can raise it without importing the command line, and the command line
(`pipeline/cli/errors.py`) prints it as ONE line, `error: <message>`, with the traceback only under
`--debug`. The message therefore has to carry everything: what was wrong, which flag or field, and
the fix. Existing library errors (`ValueError` from validation, `LookupError` subclasses such as
`CorpusNotFound`) are printed the same way, so raising `UserError` is a statement of intent, not a
requirement.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or environment; the message names the fix, on one line."""
