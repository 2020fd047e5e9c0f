"""The rules every captured value obeys, so that what the capture path acknowledges the lake reads back
unchanged: one definition shared by the pydantic schema, the msgspec hot path, the capture server, the
SDK (local and remote) and ingest.

Why these rules: the lake stores records as JSON written and read by orjson. orjson writes NaN and
±Infinity as `null` (a changed value: an outcome without a value is then quarantined), refuses
integers beyond 64 bits and strings with unpaired surrogates, reads integers between 2**64 and 1e308 as
floats, and nests at most 254 levels when writing. Any of those slipping through the capture path
would be acknowledged and then lost. So a value must be: a finite float, an integer that fits in 64
bits, a string of valid Unicode (also as an object key), and nested at most `MAX_DEPTH` levels inside
a free-form field (metadata, tool definitions, step meta extras, tool-call argument objects).

A refusal names the field path (`metadata.n.3: ...`). Text that no JSON parser here accepts (a `NaN`
literal, an unpaired `\\ud800` escape, nesting too deep to parse) is diagnosed with the stdlib parser
and an iterative scan, so even then the error says where.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date
from typing import Any

import msgspec

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what orjson writes and reads back exactly
INT64_MAX = 2**63 - 1  # Int64 lake columns (token counts)
INT32_MAX = 2**31 - 1  # Int32 lake columns (outcome step)
MAX_DEPTH = 64  # containers nested inside one free-form field

Path = tuple[str | int, ...]


class JsonValueError(ValueError):
    """A value the lake cannot keep as it was sent, with its path below the field being validated."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{dotted(path) or '<value>'}: {reason}")
        self.path, self.reason = path, reason


def dotted(path: Path) -> str:
    text = ".".join(str(p) for p in path)
    return text if len(text) <= 160 else f"{text[:150]}…({len(path)} levels)"


def _string_problem(text: str, what: str) -> str | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{what} has an unpaired surrogate \\u{ord(text[exc.start]):04x} at {exc.start}: not valid Unicode"
    return None


def _clean(v: Any, depth: int, max_depth: float, big_ints: bool) -> bool:
    """True when `v` obeys the rules: the hot path's check, without building paths (recursion stops
    at `max_depth`, so it stays shallow; a value this refuses is walked again by `problem` to say where)."""
    cls = v.__class__
    if cls is str:
        return v.isascii() or _string_problem(v, "") is None
    if cls is int:
        return big_ints or INT_MIN <= v <= INT_MAX
    if cls is float:
        return v - v == 0.0  # NaN and ±inf give NaN
    if cls is dict:
        if depth >= max_depth:
            return False
        for key, item in v.items():
            if key.__class__ is not str or not (key.isascii() or _string_problem(key, "") is None):
                return False
            if not _clean(item, depth + 1, max_depth, big_ints):
                return False
        return True
    if cls is list:
        if depth >= max_depth:
            return False
        for item in v:
            if not _clean(item, depth + 1, max_depth, big_ints):
                return False
        return True
    return v is None or cls is bool


def problem(value: Any, path: Path = (), max_depth: int | None = MAX_DEPTH,
            big_ints: bool = False) -> JsonValueError | None:
    """The first value under `value` that breaks the rules, as an error with its path; None when all
    is well. Iterative, so no nesting depth can make it fail; `max_depth=None` checks no depth;
    `big_ints=True` admits integers of any size (for values kept as JSON text: tool-call arguments)."""
    if max_depth is not None and _clean(value, 0, max_depth, big_ints):
        return None
    stack: list[tuple[Any, Path, int]] = [(value, path, 0)]
    while stack:
        v, p, depth = stack.pop()
        cls = v.__class__
        if cls is str:
            if (why := _string_problem(v, "string")) is not None:
                return JsonValueError(p, why)
        elif cls is int:
            if not big_ints and not INT_MIN <= v <= INT_MAX:
                digits = len(str(abs(v))) if abs(v) < 10**4000 else "over 4000"
                return JsonValueError(p, f"integer of {digits} digits does not fit in 64 bits; send it as a string")
        elif cls is float:
            if not math.isfinite(v):
                return JsonValueError(p, f"{v} is not a JSON number; send a finite number (or null)")
        elif cls is dict or cls is list:
            if max_depth is not None and depth >= max_depth:
                return JsonValueError(p, f"nested deeper than {max_depth} levels")
            if cls is list:
                stack.extend((item, (*p, i), depth + 1) for i, item in reversed(list(enumerate(v))))
                continue
            for key, item in reversed(list(v.items())):
                if key.__class__ is not str:
                    return JsonValueError(p, f"key {key!r} is not a string")
                if (why := _string_problem(key, f"key {key!r}")) is not None:
                    return JsonValueError(p, why)
                stack.append((item, (*p, key), depth + 1))
        elif v is not None and cls is not bool and not isinstance(v, str | int | float | dict | list | date):
            return JsonValueError(p, f"a {cls.__name__} is not a JSON value")
    return None


def check(value: Any, max_depth: int | None = MAX_DEPTH, big_ints: bool = False) -> Any:
    """`value` when it obeys the rules; raises JsonValueError (a ValueError) naming the path otherwise."""
    if max_depth is not None and _clean(value, 0, max_depth, big_ints):
        return value
    if (err := problem(value, max_depth=max_depth, big_ints=big_ints)) is not None:
        raise err
    return value


def dumps_exact(value: Any) -> str:
    """Compact JSON text of a checked value; integers beyond 64 bits keep their exact digits (the
    stdlib writes them, orjson refuses them): tool-call arguments are kept as text, never as floats."""
    import orjson

    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# ---- JSON text ---------------------------------------------------------------------------------------
class _NonFinite:
    """What the diagnostic parse puts where the text had NaN, Infinity or a number beyond a float."""

    def __init__(self, text: str):
        self.text = text


# A whole JSON string, a punctuation mark, or a stray quote (an unterminated string): enough to find
# where containers and items start and end without parsing them.
TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:"]')


def _deep_path(raw: bytes, limit: int) -> Path | None:
    """Where nesting first passes `limit` levels, found by scanning tokens (never recursing)."""
    stack: list[list[Any]] = []  # per open container: [is_object, its current key or index]
    last_string: bytes = b""
    for m in TOKEN.finditer(raw):
        tok = m.group()
        c = tok[:1]
        if c == b'"':
            last_string = tok
        elif c == b":" and stack:
            try:
                stack[-1][1] = json.loads(last_string)
            except ValueError:
                stack[-1][1] = "?"
        elif c == b"," and stack and not stack[-1][0]:
            stack[-1][1] += 1
        elif c in b"[{":
            stack.append([c == b"{", "?" if c == b"{" else 0])
            if len(stack) > limit:
                return tuple(s[1] for s in stack[:-1])
        elif c in b"]}" and stack:
            stack.pop()
    return None


def _diagnose(raw: bytes, fallback: str) -> JsonValueError:
    """Why JSON text that the fast parsers refused cannot be kept, with the path where possible."""
    deep = _deep_path(raw, MAX_DEPTH + 16)
    if deep is not None:
        return JsonValueError(deep, f"nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(raw, parse_constant=_NonFinite,
                         parse_float=lambda t: v if math.isfinite(v := float(t)) else _NonFinite(t))
    except (ValueError, RecursionError) as exc:
        return JsonValueError((), f"malformed JSON: {exc}")
    stack: list[tuple[Any, Path]] = [(obj, ())]
    while stack:  # a NaN or overflowing number, then the ordinary rules (surrogates)
        v, p = stack.pop()
        if isinstance(v, _NonFinite):
            return JsonValueError(p, f"{v.text} is not a finite JSON number; send a finite number (or null)")
        if isinstance(v, dict):
            stack.extend((item, (*p, k)) for k, item in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((item, (*p, i)) for i, item in reversed(list(enumerate(v))))
    return problem(obj, max_depth=None) or JsonValueError((), f"malformed JSON: {fallback}")


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON text exactly (integers of any size stay integers, unlike orjson, which reads those
    beyond 64 bits as floats). Raises JsonValueError naming the path when the text breaks the rules
    before any value exists (NaN literals, numbers beyond a float, unpaired surrogates, deep nesting)."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
        raise _diagnose(data, str(exc)) from None
