"""Column plumbing between polars frames and Deeplake corpora: types, row hashes, conversions.

Kept apart from `pipeline.corpus.store` so the versioning logic reads on its own. Every column gets a short
*type key* ("text", "float32", "array[int32]", "nullable[int64]") that is recorded in each version's
lineage: it decides the Deeplake type on write and how a column is decoded on read, and a change of
key between versions means the stored schema must be rebuilt.

Two hashes, for two jobs. `row_hashes` (polars' vectorised row hash, 128 bits, no Python per row)
only finds which stored rows a new snapshot keeps: if it ever disagrees (another polars, another
machine) rows just look changed and are rewritten, never wrongly kept. `content_hash` (sha256 over
the bytes, sorted by trajectory_id) is the stable identity recorded in the lineage. Neither reads the
token columns: they are derived from the text, and the lineage's derivation key (tokenizer,
max_length, ...) stands for them, so an incremental snapshot never re-reads millions of tokens.
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
# Row hashes only decide which stored rows a new snapshot keeps (a delta), so they may be fast rather
# than eternal: polars' row hash, stable within one polars version. A corpus whose rows were hashed
# under another scheme (another polars) is rebuilt instead of diffed. `content_hash` is the stable one.
HASH_SCHEME = f"polars-{pl.__version__}/hash_rows-128"
HASH_KEY = "hash128"  # the stored row-hash column's type key
# Lineage fields that decide what the token columns hold, given the text: the derivation key.
DERIVATION_FIELDS = ("tokenizer", "max_length", "tools_in_prompt", "format")
_SCALARS = {
    "bool": T.Bool, "int8": T.Int8, "int16": T.Int16, "int32": T.Int32, "int64": T.Int64,
    "uint8": T.UInt8, "uint16": T.UInt16, "uint32": T.UInt32, "uint64": T.UInt64,
    "float32": T.Float32, "float64": T.Float64,
}


_POLARS: dict[str, Any] = {
    "bool": pl.Boolean, "int8": pl.Int8, "int16": pl.Int16, "int32": pl.Int32, "int64": pl.Int64,
    "uint8": pl.UInt8, "uint16": pl.UInt16, "uint32": pl.UInt32, "uint64": pl.UInt64,
    "float32": pl.Float32, "float64": pl.Float64,
}


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
    if key == HASH_KEY:  # fixed shape: a block read comes back as one (n, 2) ndarray, no str per row
        return T.Array(T.UInt64(), shape=[2])
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


def token_columns(keys: dict[str, str]) -> list[str]:
    """Token arrays derived from the text (`*_ids` / `*_mask` int arrays). They are not hashed:
    re-reading millions of tokens made an incremental snapshot cost half a full one. What they hold is
    pinned by the derivation key instead (see `derivation`). `n_tokens` stays hashed (one int a row):
    a new max_length changes exactly the rows it truncates differently, even when no lineage says so."""
    return sorted(c for c, k in keys.items() if k.startswith("array[") and c.endswith(("_ids", "_mask")))


def derivation(lineage: dict[str, Any] | None) -> dict[str, Any]:
    """The lineage fields that fix the token columns (tokenizer, max_length, ...), those given."""
    return {k: lineage[k] for k in DERIVATION_FIELDS if lineage and lineage.get(k) is not None}


def _identity(s: pl.Series, key: str) -> pl.Series:
    """A column as it is hashed: numbers and bools in their storage dtype (reward as float32, what a
    reader gets back), nested values as sorted-key JSON, everything else as its string form."""
    scalar = key[9:-1] if key.startswith("nullable[") else key
    if scalar in _SCALARS:
        return s.cast(_POLARS[scalar], strict=False)
    if s.dtype == pl.String:
        return s
    if s.dtype.is_nested() or s.dtype == pl.Object:
        opts = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        return pl.Series(s.name, [None if v is None else orjson.dumps(v, default=str, option=opts).decode()
                                  for v in s.to_list()], dtype=pl.String)
    return s.cast(pl.String)


def hashed_columns(rows: pl.DataFrame, keys: dict[str, str] | None = None) -> pl.DataFrame:
    """The part of the rows that identifies them: every column but the token arrays, sorted by name."""
    keys = keys or {c: type_key(c, rows[c]) for c in rows.columns}
    return pl.DataFrame([_identity(rows[n], keys[n]) for n in sorted(set(rows.columns) - set(token_columns(keys)))])


def row_hashes(frame: pl.DataFrame) -> np.ndarray:
    """128 bits per row as an (n, 2) uint64 array: two seeded polars row hashes, no Python per row."""
    return np.stack([frame.hash_rows(seed=1).to_numpy(), frame.hash_rows(seed=2).to_numpy()], axis=1)


def hash_frame(hashes: np.ndarray) -> pl.DataFrame:
    """Row hashes as two columns, for joins that find kept, stale and new rows. An empty version's hash
    column reads back as a flat `(0,)` array, hence the reshape."""
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, 2)
    return pl.DataFrame({"h0": hashes[:, 0], "h1": hashes[:, 1]}, schema={"h0": pl.UInt64, "h1": pl.UInt64})


def content_hash(frame: pl.DataFrame, derived: dict[str, Any] | None = None) -> str:
    """Stable, order-independent hash of a version: sha256 over the column names and types, then per
    column, in trajectory_id order (ids are unique), the value lengths (-1 for null) and UTF-8 bytes of
    text, or the null mask and little-endian values of numbers; prefixed by the derivation key when
    there is one, so the same text tokenized another way is another version. Bytes come straight from
    the Arrow/numpy buffers: no Python object per row."""
    head = {"columns": [[s.name, _scalar_key(s.dtype) or "text"] for s in frame.get_columns()],
            "derived": derived or {}}
    digest = hashlib.sha256(orjson.dumps(head, option=orjson.OPT_SORT_KEYS))
    for s in frame.sort("trajectory_id").get_columns():
        nulls = s.null_count()
        if _scalar_key(s.dtype):
            digest.update(s.is_null().to_numpy().tobytes())
            values = s.fill_null(False if s.dtype == pl.Boolean else 0).to_numpy()
            digest.update(values.astype(values.dtype.newbyteorder("<")).tobytes())
            continue
        arr = (s.fill_null("") if nulls else s).to_arrow()
        arr = (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(pa.large_string())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
        lengths = np.diff(offsets)
        if nulls:
            lengths[s.is_null().to_numpy()] = -1
        digest.update(lengths.astype("<i8").tobytes())
        digest.update(memoryview(arr.buffers()[2])[offsets[0]:offsets[-1]])
    return "sha256:" + digest.hexdigest()
