"""Export a corpus version to TRL-ready data: a Hugging Face `datasets.Dataset`, Parquet or JSONL.

Rows come out in TRL 1.16's conversational shapes: sft `messages` (+ `tools`), dpo `prompt`/`chosen`/
`rejected`, kto `prompt`/`completion`/`label`, rl `prompt` + `ground_truth`; `split`, ids and rewards
ride along. Messages use the OpenAI shape (`tool_calls: [{"id", "type": "function", "function":
{"name", "arguments"}}]`, tool results with `tool_call_id` and `name`; `reasoning` becomes
`reasoning_content`, and tracemill's `is_error` and step `meta` are dropped: no chat template reads them).

Why tool-call `arguments` stay JSON *strings* (and `tools` is one JSON string per row): that is the
OpenAI wire format that HF chat templates and TRL accept, and Arrow, which backs `datasets` and Parquet,
infers *one* struct type per column. Argument objects (or tool parameter schemas) of different shapes
would be unified into a struct holding every key ever seen, so `{"item": "rice"}` would come back as
`{"item": "rice", "expression": null, "amount": null, …}` and render wrong calls. TRL 1.16's SFT, DPO
and KTO trainers `json.loads` a string `tools` column themselves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import orjson
import polars as pl

from pipeline.chat import canonical_arguments
from pipeline.corpus.store import Corpus, open_corpus
from pipeline.jsonio import dumps_json

TRL_COLUMNS = {"sft": ("messages", "tools"), "dpo": ("prompt", "chosen", "rejected", "tools"),
               "kto": ("prompt", "completion", "label", "tools"), "rl": ("prompt", "ground_truth", "tools")}
META_COLUMNS = {"sft": ("trajectory_id", "task_id", "agent", "model", "reward", "split"),
                "dpo": ("pair_id", "task_id", "chosen_id", "rejected_id", "chosen_reward", "rejected_reward",
                        "source", "split"),
                "kto": ("trajectory_id", "task_id", "reward", "split"), "rl": ("task_id", "split")}
_MESSAGE_COLUMNS = {"messages", "prompt", "chosen", "rejected", "completion"}
_TOKEN_COLUMNS = {"sft": {"input_ids": "input_ids", "loss_mask": "assistant_masks"}}  # TRL's own names


def infer_format(columns: list[str]) -> str:
    """The format of a corpus whose lineage does not say (older snapshots), from its columns."""
    for fmt, marker in (("dpo", "chosen"), ("kto", "label"), ("rl", "ground_truth"), ("sft", "messages")):
        if marker in columns:
            return fmt
    raise ValueError(f"cannot tell the format of a corpus with columns {columns}")


def openai_arguments(arguments: Any) -> str:
    """Arguments as one canonical JSON string (`json.dumps` spacing, double encoding undone), the text
    `pipeline.chat` renders, so a template that passes the string through renders what we train on.
    A string that is not JSON at all is kept as it is."""
    value = canonical_arguments(arguments)
    return arguments if isinstance(value, str) and value == arguments else dumps_json(value, ensure_ascii=False)


def openai_message(m: dict[str, Any]) -> dict[str, Any]:
    """One tracemill message in the OpenAI chat shape that HF chat templates and TRL read."""
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content")}
    if m.get("reasoning"):
        out["reasoning_content"] = m["reasoning"]
    if m.get("tool_calls"):
        out["tool_calls"] = [{"id": c.get("id"), "type": "function",
                              "function": {"name": c.get("name"), "arguments": openai_arguments(c.get("arguments"))}}
                             for c in m["tool_calls"]]
    if m["role"] == "tool":
        out["tool_call_id"], out["name"] = m.get("tool_call_id"), m.get("name")
    return out


def openai_tools(tools: str | None) -> str:
    """Tool definitions as a JSON string of `{"type": "function", "function": {...}}` entries."""
    defs = orjson.loads(tools or "[]")
    return orjson.dumps([t if "function" in t else {"type": "function", "function": t} for t in defs]).decode()


def trl_rows(corpus: Corpus, format: str | None = None, *, split: str | None = None,
             include_tokens: bool = False) -> list[dict[str, Any]]:
    """The corpus rows in TRL's shape for `format` (default: the lineage's, else inferred from columns).
    With `include_tokens`, token columns are kept (sft's renamed to TRL's `input_ids`/`assistant_masks`,
    which SFTTrainer honours as pre-tokenized); they only fit the tokenizer the corpus was built with."""
    fmt = corpus_format(corpus, format)
    if fmt not in TRL_COLUMNS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(TRL_COLUMNS)}")
    have = set(corpus.columns)
    tokens = {c: _TOKEN_COLUMNS.get(fmt, {}).get(c, c) for c in corpus.columns
              if include_tokens and (c.endswith("_ids") or c.endswith("_mask"))}
    cols = [c for c in (*TRL_COLUMNS[fmt], *META_COLUMNS[fmt]) if c in have or c == "tools"]
    df = corpus.to_polars([c for c in cols if c in have] + list(tokens))
    if split is not None:
        df = df.filter(pl.col("split") == split)
    out = []
    for r in df.iter_rows(named=True):
        row: dict[str, Any] = {}
        for c in cols:
            value = r.get(c)
            if c in _MESSAGE_COLUMNS:
                value = [openai_message(m) for m in orjson.loads(value or "[]")]
            elif c == "tools":
                value = openai_tools(value)
            elif c == "label":  # corpus_io stores polars Booleans as text ("true"/"false")
                value = value in (True, 1, "true", "True")
            elif isinstance(value, float) and math.isnan(value):  # a missing reward is stored as NaN
                value = None
            row[c] = value
        out.append(row | {new: list(r[old]) for old, new in tokens.items()})
    return out


def corpus_format(corpus: Corpus, format: str | None = None) -> str:
    """The TRL row shape a corpus exports as: `format`, else its lineage's, else inferred from its columns."""
    return format or corpus.lineage.get("format") or infer_format(corpus.columns)


def _dataset(corpus: Corpus, format: str | None, split: str | None, include_tokens: bool = False) -> Any:
    import datasets

    rows = trl_rows(corpus, format, split=split, include_tokens=include_tokens)
    if rows:
        return datasets.Dataset.from_list(rows)
    fmt = corpus_format(corpus, format)
    return datasets.Dataset.from_dict({c: [] for c in (*TRL_COLUMNS[fmt], *META_COLUMNS[fmt])})


def to_hf_dataset(ref: str, root: str | None = None, format: str | None = None, *, split: str | None = None,
                  include_tokens: bool = False) -> Any:
    """`datasets.Dataset` of a corpus version (`org/name@vN`; latest without @) in TRL's format."""
    return _dataset(open_corpus(ref, root), format, split, include_tokens)


def write_export(corpus: Corpus, out_path: str | Path, fmt: Literal["jsonl", "parquet", "hf"] = "jsonl",
                 format: str | None = None, *, split: str | None = None) -> int:
    """Write an open corpus version to `out_path` (see `export_corpus`); returns the rows written."""
    if fmt not in ("jsonl", "parquet", "hf"):
        raise ValueError(f"unknown export type {fmt!r}; expected jsonl, parquet or hf")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        rows = trl_rows(corpus, format, split=split)
        out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        return len(rows)
    ds = _dataset(corpus, format, split)
    if fmt == "parquet":
        ds.to_parquet(str(out))
    else:
        ds.save_to_disk(str(out))
    return ds.num_rows


def export_corpus(ref: str, out_path: str | Path, fmt: Literal["jsonl", "parquet", "hf"] = "jsonl",
                  root: str | None = None, format: str | None = None, *, split: str | None = None) -> Path:
    """Write a corpus version to `out_path`: JSONL (one TRL row per line, no Arrow null padding: what
    OpenAI-style fine-tuning APIs take), Parquet (the HF dataset's Arrow table), or an HF dataset folder
    (`datasets.load_from_disk`). Returns the path written."""
    if fmt not in ("jsonl", "parquet", "hf"):  # before the corpus is opened
        raise ValueError(f"unknown export type {fmt!r}; expected jsonl, parquet or hf")
    write_export(open_corpus(ref, root), out_path, fmt, format, split=split)
    return Path(out_path)
