"""Token columns for curated rows of every training format: ids and loss masks from the one chat
rendering in `pipeline.chat` (the base model's own chat template), so what a corpus stores is exactly what
training sees.

Why its own module: row building (`rows`) needs no tokenizer, and the snapshot stage needs both;
keeping tokenization here lets the stage import rows and tokenization downward."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import polars as pl

from pipeline import progress
from pipeline.chat import tokenize_conversation, tokenize_prompt
from pipeline.corpus.rows import with_row_key


def tokenize_rows(df: pl.DataFrame, tokenizer: Any, max_length: int,
                  tools_in_prompt: bool = True) -> tuple[pl.DataFrame, int]:
    """Add input_ids / loss_mask / n_tokens; rows with no trainable token are dropped (NaN losses)."""
    ids, masks, keep = [], [], []
    for n, r in enumerate(df.iter_rows(named=True), start=1):
        if n % 64 == 0:
            progress.report(n, df.height)
        tools = orjson.loads(r["tools"] or "[]") if tools_in_prompt else None
        i, m = tokenize_conversation(tokenizer, orjson.loads(r["messages"]), tools, max_length=max_length)
        keep.append(sum(m) > 0)
        ids.append(i)
        masks.append(m)
    out = df.with_columns(pl.Series("input_ids", ids, dtype=pl.List(pl.Int32)),
                          pl.Series("loss_mask", masks, dtype=pl.List(pl.UInt8)),
                          pl.Series("n_tokens", [len(i) for i in ids], dtype=pl.Int32))
    kept = out.filter(pl.Series(keep, dtype=pl.Boolean))
    return kept, out.height - kept.height


def tokenize_format_rows(format: str, df: pl.DataFrame, tokenizer: Any, max_length: int,
                         tools_in_prompt: bool = True) -> tuple[pl.DataFrame, int]:
    """Rows plus token columns (dpo: prompt_ids, chosen_/rejected_ids and _mask; kto: prompt_ids, completion_ids
    and _mask; rl: prompt_ids; all: n_tokens) and the count of rows dropped as untrainable (NaN losses). Masks
    come from one `tokenize_conversation` of prompt + completion (truncated to max_length), exactly as SFT:
    1 on assistant bodies, 0 on tool results and headers. The prompt ends on the assistant header."""
    if format == "sft":
        return tokenize_rows(df, tokenizer, max_length, tools_in_prompt)
    sides = {"dpo": ("chosen", "rejected"), "kto": ("completion",), "rl": ()}[format]
    cols: dict[str, list[Any]] = defaultdict(list)
    for n, r in enumerate(df.iter_rows(named=True), start=1):
        if n % 64 == 0:
            progress.report(n, df.height)
        prompt = orjson.loads(r["prompt"])
        tools = orjson.loads(r["tools"] or "[]") if tools_in_prompt else None
        p_ids = tokenize_prompt(tokenizer, prompt, tools)
        ok, longest = len(p_ids) <= max_length, 0
        for side in sides:
            ids, mask = tokenize_conversation(tokenizer, prompt + orjson.loads(r[side]), tools, max_length)
            cols[f"{side}_ids"].append(ids[len(p_ids):])
            cols[f"{side}_mask"].append(mask[len(p_ids):])
            ok = ok and sum(mask[len(p_ids):]) > 0
            longest = max(longest, len(ids) - len(p_ids))
        cols["prompt_ids"].append(p_ids)
        cols["n_tokens"].append(len(p_ids) + longest)
        cols["keep"].append(ok)
    types = {name: pl.Int32 if name == "n_tokens" else pl.List(pl.UInt8 if name.endswith("_mask") else pl.Int32)
             for name in ["prompt_ids", *(f"{s}_{k}" for s in sides for k in ("ids", "mask")), "n_tokens"]}
    out = with_row_key(format, df).with_columns(pl.Series(n, cols[n], dtype=t) for n, t in types.items())
    kept = out.filter(pl.Series(cols["keep"], dtype=pl.Boolean))
    return kept, out.height - kept.height
