"""JSON text that every reader accepts: a missing number (NaN, ±infinity) is written as `null`.

Why: the stdlib's `json.dumps` writes `NaN`/`Infinity` by default, which is not JSON; orjson (and with
it `tracemill eval report`), JavaScript, Go and jq refuse the whole file. orjson already writes such
floats as `null`; this is the same rule for the places that need `json.dumps` (its spacing is what
chat templates' `tojson` renders, and it takes integers beyond 64 bits that orjson refuses).
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """`value` with every non-finite float inside dicts, lists and tuples replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def dumps_json(value: Any, **kwargs: Any) -> str:
    """`json.dumps(value, **kwargs)`, with null for missing numbers (never `NaN`, never an error for one)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
