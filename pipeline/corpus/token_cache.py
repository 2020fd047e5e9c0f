"""Tokenize only what is new: a per-corpus cache of tokenized curated rows, keyed by row content.

Why: a nightly snapshot usually adds ~1% new rows, and `corpus.snapshot` already appends only that
delta; re-tokenizing every curated row before it would still make each snapshot cost a full pass.
The cache sits next to the curated table (`curated/<corpus>.tokens.parquet`) and is only valid for
one derivation (format, tokenizer fingerprint, max_length, tools_in_prompt): any change there
tokenizes everything again, exactly like the snapshot's own rebuild rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import polars as pl

from pipeline import storage

SRC = ("_src0", "_src1")  # a 128-bit content hash of the curated row (two seeded 64-bit row hashes)


def _with_source_hash(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(df.hash_rows(seed=0).alias(SRC[0]), df.hash_rows(seed=1).alias(SRC[1]))


def tokenize_with_cache(curated: pl.DataFrame, tokenize: Callable[[pl.DataFrame], tuple[pl.DataFrame, int]],
                        cache_path: Any, derivation: dict[str, Any]) -> tuple[pl.DataFrame, int, dict[str, int]]:
    """(tokenized rows, rows dropped as untrainable, {"cached": n, "tokenized": m}). `tokenize` is the
    format's tokenizer over a frame; it must keep the input columns (it does: it only adds token ones)."""
    key = orjson.dumps(derivation, option=orjson.OPT_SORT_KEYS).decode()
    src = _with_source_hash(curated)
    cached_rows, seen = None, None
    rows_path, seen_path = cache_path, cache_path.with_name(cache_path.name.replace(".parquet", ".seen.parquet"))
    if rows_path.exists() and seen_path.exists():
        seen = storage.read_parquet(seen_path)
        if seen.height and seen["derivation"][0] == key:
            cached_rows = storage.read_parquet(rows_path)
        else:
            seen = None
    if seen is None:
        seen = pl.DataFrame(schema={SRC[0]: pl.UInt64, SRC[1]: pl.UInt64, "derivation": pl.String})
    new = src.join(seen.select(SRC), on=list(SRC), how="anti")
    fresh, _ = tokenize(new)  # also on an empty frame: it gives the token columns their types
    parts = [fresh]
    if cached_rows is not None:  # cached rows still curated now (the others left the filter)
        parts.insert(0, cached_rows.join(src.select(SRC), on=list(SRC), how="semi"))
    out = pl.concat(parts, how="diagonal_relaxed")
    order = src.select(SRC).with_row_index("_order")
    out = out.join(order, on=list(SRC), how="left").sort("_order").drop("_order")  # curated order, as before
    storage.write_parquet(out, rows_path)
    storage.write_parquet(src.select(SRC).with_columns(pl.lit(key).alias("derivation")), seen_path)
    return out.drop(SRC), src.height - out.height, {"cached": src.height - new.height, "tokenized": new.height}
