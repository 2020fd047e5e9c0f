"""Column plumbing between polars frames and Deeplake corpora: types, row hashes, conversions.

Kept apart from `pipeline.corpus` so the versioning logic reads on its own. Every column gets a short
*type key* ("text", "float32", "array[int32]", "nullable[int64]") that is recorded in each version's
lineage: it decides the Deeplake type on write and how a column is decoded on read, and a change of
key between versions means the stored schema must be rebuilt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
from deeplake import types as T

# Columns with a fixed type whatever dtype the caller's frame happens to carry, so every corpus
# streams the same tensors to training (token ids as int32, masks as uint8, reward as float32).
CANONICAL: dict[str, str] = {
    "trajectory_id": "text", "task_id": "text", "agent": "text", "model": "text", "split": "text",
    "messages": "text", "tools": "text", "reward": "float32", "n_tokens": "int32",
    "input_ids": "array[int32]", "loss_mask": "array[uint8]",
}
_SCALARS = {
    "bool": T.Bool, "int8": T.Int8, "int16": T.Int16, "int32": T.Int32, "int64": T.Int64,
    "uint8": T.UInt8, "uint16": T.UInt16, "uint32": T.UInt32, "uint64": T.UInt64,
    "float32": T.Float32, "float64": T.Float64,
}

_POLARS = {"int8": pl.Int8, "int16": pl.Int16, "int32": pl.Int32, "int64": pl.Int64, "uint8": pl.UInt8,
           "uint16": pl.UInt16, "uint32": pl.UInt32, "uint64": pl.UInt64, "float32": pl.Float32,
           "float64": pl.Float64}


def _scalar_key(dtype: pl.DataType) -> str | None:
    name = str(dtype).lower()
    name = "bool" if name == "boolean" else name
    return name if name in _SCALARS else None


def type_key(name: str, s: pl.Series) -> str:
    """The storage type of a column. Ints/bools with nulls become Nullable (Deeplake scalars reject
    None); float nulls are stored as NaN instead so reward stays a plain float32 block."""
    key = CANONICAL.get(name)
    if key is None:
        dtype = s.dtype
        if isinstance(dtype, pl.List | pl.Array) and _scalar_key(dtype.inner) not in (None, "bool"):
            key = f"array[{_scalar_key(dtype.inner)}]"
        else:
            key = _scalar_key(dtype) or "text"
    if key in _SCALARS and not key.startswith("float") and s.null_count():
        key = f"nullable[{key}]"
    return key


def deeplake_type(key: str) -> Any:
    if key == "text":
        return T.Text()
    if key.startswith("array["):
        return T.Array(_SCALARS[key[6:-1]](), dimensions=1)
    if key.startswith("nullable["):
        return T.Nullable(_SCALARS[key[9:-1]]())
    return _SCALARS[key]()


def to_storage(s: pl.Series, key: str) -> Any:
    """Values of one column in the form `ds.append` takes (lists of ndarrays for token columns)."""
    if key == "text":
        if s.dtype == pl.String:
            return s.to_list()
        if s.dtype.is_nested() or s.dtype == pl.Null:
            return [None if v is None else orjson.dumps(v, default=str).decode() for v in s.to_list()]
        return s.cast(pl.String).to_list()
    if key.startswith("nullable["):
        return s.to_list()
    if key.startswith("array["):
        inner = np.dtype(key[6:-1])
        arr = s.cast(pl.List(pl.Int64 if inner.kind in "iu" else pl.Float64)).to_arrow()
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        offsets = np.asarray(arr.offsets)
        values = np.nan_to_num(np.asarray(arr.values.fill_null(0))).astype(inner)
        return [values[offsets[i]:offsets[i + 1]] for i in range(len(arr))]
    if key.startswith("float"):
        return s.cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(key)
    return s.to_numpy().astype(key)


def from_storage(values: Any, key: str, name: str) -> pl.Series:
    """A column read from Deeplake as a polars Series (token columns as List columns, built in one
    arrow call rather than one Python object per row)."""
    if key.startswith("array["):
        arrays = [np.zeros(0) if v is None else v for v in values]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        flat = np.concatenate(arrays).astype(key[6:-1]) if arrays else np.zeros(0, key[6:-1])
        return pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat)))
    if key.startswith("nullable["):
        return pl.Series(name, decode_nullable(values))
    if key == "text":
        return pl.Series(name, list(values), dtype=pl.String)
    return pl.Series(name, values if isinstance(values, np.ndarray) else list(values))


def decode_nullable(values: Iterable[Any]) -> list[Any]:
    """Deeplake returns Nullable scalars as 0-d arrays or None; callers want Python values."""
    return [None if v is None else np.asarray(v).item() for v in values]


def _cells(s: pl.Series, key: str) -> list[bytes | None]:
    """Canonical bytes per value: token lists as raw buffers of their storage dtype (no Python int per
    token, which made hashing the slowest step of a snapshot), everything else as its string form."""
    dt = s.dtype
    if key.startswith("array["):
        arr = s.cast(pl.List(_POLARS[key[6:-1]])).to_arrow()
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        off, vals = arr.offsets.to_numpy(), arr.values.to_numpy(zero_copy_only=False)
        nulls = s.is_null().to_numpy()
        return [None if nulls[i] else vals[off[i]:off[i + 1]].tobytes() for i in range(len(s))]
    if dt.is_nested() or dt == pl.Object:
        opts = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        return [None if v is None else orjson.dumps(v, default=str, option=opts) for v in s.to_list()]
    values = s.to_list() if dt == pl.String else s.cast(pl.String).to_list()
    return [None if v is None else v.encode() for v in values]


def row_hashes(rows: pl.DataFrame, keys: dict[str, str] | None = None) -> list[str]:
    """One stable hash per row over every column (sorted by name, length-prefixed) as it will be
    stored, so it ignores column order; the corpus hash is derived from these, order-independently."""
    keys = keys or {c: type_key(c, rows[c]) for c in rows.columns}
    names = sorted(rows.columns)
    base = hashlib.blake2b(digest_size=16)
    base.update("\x1f".join(names).encode())
    out = []
    for cells in zip(*(_cells(rows[n], keys[n]) for n in names), strict=True):
        h = base.copy()
        for c in cells:
            h.update(b"\xff" if c is None else len(c).to_bytes(8, "little") + c)
        out.append(h.hexdigest())
    return out


def content_hash(hashes: Iterable[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
