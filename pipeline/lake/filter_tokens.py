"""The filter language's tokens, its size limits and its one error type (see `pipeline.lake.filters`).

Limits come first, because a filter is user input that reaches every run: a filter over
`MAX_FILTER_CHARS` (room for an `in [...]` list of ~150,000 ids) or a name over `MAX_NAME_CHARS` is
refused before any parsing, with the limit and what to do instead. An error shows at most a window
of the filter around the culprit, so a 1 MB filter still gives a short message with its caret.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

MAX_FILTER_CHARS = 2_000_000
MAX_NAME_CHARS = 128  # a column name; a 100 KB "name" is a paste accident
_WINDOW = 60  # characters of context either side of the caret in an error

_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false", "between", "now"})
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<duration>\d+(?:\.\d+)?[smhd])(?![A-Za-z0-9_])
    |(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    |(?P<op>==|!=|<>|>=|<=|[=<>()\[\],+-])""",
    re.X | re.A | re.S,
)


class FilterError(ValueError):
    """The message repeats the filter with a caret under the culprit: filters come from shells and YAML.
    `window` and `offset` are the shown part of the filter and the caret's column within it."""

    def __init__(self, reason: str, expr: str, position: int) -> None:
        self.reason, self.expr, self.position = reason, expr, position
        start = max(0, position - _WINDOW) if len(expr) > 2 * _WINDOW else 0
        end = min(len(expr), position + _WINDOW) if len(expr) > 2 * _WINDOW else len(expr)
        head, tail = ("…" if start else ""), ("…" if end < len(expr) else "")
        self.window = head + re.sub(r"\s", " ", expr[start:end]) + tail  # a tab or newline would shift the caret
        self.offset = position - start + len(head)
        super().__init__(f"{self.window}\n{' ' * self.offset}^ {reason} (position {position})")


class Tok(NamedTuple):
    kind: str  # number, string, duration, ident, end, or the keyword / operator itself ("and", "==")
    value: Any
    pos: int
    text: str

    def __str__(self) -> str:
        return "end of input" if self.kind == "end" else repr(self.text[:40])


def tokenize(src: str) -> list[Tok]:
    if len(src) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is {len(src):,} characters, the limit is {MAX_FILTER_CHARS:,}: split it, or "
                          "mark those trajectories with an outcome and filter on that", src, MAX_FILTER_CHARS)
    tokens, pos = [], 0
    while pos < len(src):
        if (match := _TOKEN.match(src, pos)) is None:
            reason = "unterminated string" if src[pos] in "'\"" else f"unexpected character {src[pos]!r}"
            raise FilterError(reason, src, pos)
        kind, text, value = match.lastgroup or "", match.group(), match.group()
        if kind == "ident" and len(text) > MAX_NAME_CHARS:
            raise FilterError(f"a name of {len(text):,} characters: column names have at most {MAX_NAME_CHARS}",
                              src, pos)
        if kind == "ident" and text.lower() in _KEYWORDS or kind == "op":
            kind = value = {"=": "==", "<>": "!="}.get(text.lower(), text.lower())
        elif kind == "string":
            value = re.sub(r"\\(.)", lambda e: {"n": "\n", "t": "\t"}.get(e[1], e[1]), text[1:-1], flags=re.S)
        elif kind == "number":
            value = int(text) if text.isdigit() and len(text) <= 18 else float(text)
            if not math.isfinite(value):
                raise FilterError("number out of range", src, pos)
        if kind != "ws":
            tokens.append(Tok(kind, value, pos, text))
        pos = match.end()
    return [*tokens, Tok("end", None, len(src), "")]
