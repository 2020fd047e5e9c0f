"""One function per pipeline stage, composing the library modules. The Dagster assets call these and
only turn their results into metadata, so every stage also runs (and is tested) without Dagster."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from pipeline import storage
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec
from pipeline.corpus.curate import CurationStats
from pipeline.lake import ingest as lake
from pipeline.logs import event, get_logger

log = get_logger("stages")


def joined_days(ws: Workspace) -> list[str]:
    return sorted(p.stem for p in (ws.lake / "joined").glob("*.parquet"))


def read_joined(ws: Workspace) -> pl.DataFrame:
    return lake.read_days([ws.joined_path(d) for d in joined_days(ws)])


# ---- base model ---------------------------------------------------------------------------------
def resolve_model(base_model: str, models_dir: Path) -> str:
    """`tiny` means the local model built by `prepare_base_model`; anything else is an HF id or path."""
    return str(models_dir / "tiny") if base_model == "tiny" else base_model


def workspace_texts(ws: Workspace, limit: int = 5000) -> list[str]:
    """Rendered conversations from the lake, the text a tiny tokenizer is trained on."""
    from pipeline.chat_format import render_segments

    paths = sorted((ws.lake / "trajectories").glob("*.parquet"))
    texts: list[str] = []
    for p in paths:
        for r in storage.read_parquet(p, columns=["messages_json", "tools_json"]).iter_rows(named=True):
            segs = render_segments(orjson.loads(r["messages_json"]), orjson.loads(r["tools_json"] or "[]"))
            texts.append("".join(s for s, _ in segs))
            if len(texts) >= limit:
                return texts
    return texts


def prepare_base_model(ws: Workspace, base_model: str, models_dir: Path) -> dict[str, Any]:
    """Build the tiny model once (tokenizer trained on the workspace's text), or pass an HF id through."""
    path = resolve_model(base_model, models_dir)
    if base_model != "tiny":
        return {"model": path, "built": False}
    built = False
    if not (Path(path) / "config.json").exists():
        from pipeline.train.tiny_model import build_tiny_model

        texts = workspace_texts(ws) or ["<|user|>hello<|end|><|assistant|>hi<|end|>"]
        build_tiny_model(texts, path)
        built = True
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    params = _param_count(cfg)
    return {"model": path, "built": built, "vocab_size": len(tok), "parameters": params}


def _param_count(cfg: Any) -> int:
    h, v, n, i = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_layer = 4 * h * h + 3 * h * i + 2 * h
    return int(v * h * (1 if getattr(cfg, "tie_word_embeddings", False) else 2) + n * per_layer + h)


# ---- curation and snapshot ---------------------------------------------------------------------
def curate_corpus(ws: Workspace, spec: CorpusSpec) -> tuple[pl.DataFrame, CurationStats]:
    """Rows of the spec's format (sft/dpo/kto/rl) from every joined partition (+ explicit preferences)."""
    from pipeline.corpus.rows import build_rows

    prefs = storage.read_parquet(ws.preferences_path) if ws.preferences_path.exists() else None
    df, stats = build_rows(spec.format, read_joined(ws), prefs, spec)
    lake.write_parquet(df, ws.curated_path(spec.name))
    event(log, "curated", workspace=ws.name, corpus=spec.name, format=spec.format, rows_in=stats.input_rows,
          after_filter=stats.after_filter, rows_out=df.height, dropped=dict(stats.dropped),
          redacted=dict(stats.redactions))
    return df, stats


def tokenize_rows(df: pl.DataFrame, tokenizer: Any, max_length: int,
                  tools_in_prompt: bool = True) -> tuple[pl.DataFrame, int]:
    """Add input_ids / loss_mask / n_tokens; rows with no trainable token are dropped (NaN losses)."""
    from pipeline.chat_format import tokenize_conversation

    ids, masks, keep = [], [], []
    for r in df.iter_rows(named=True):
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


def snapshot_corpus(ws: Workspace, spec: CorpusSpec, corpus_root: str, base_model: str, models_dir: Path):
    """Tokenize the curated rows and snapshot them: a new tag only when the content changed, and only
    once the wait policy is satisfied (otherwise the latest version stays, marked `waiting`)."""
    from transformers import AutoTokenizer

    from pipeline.corpus.rows import tokenize_format_rows
    from pipeline.corpus.store import CorpusNotFound, SnapshotInfo, open_corpus, resolve_corpus_url, snapshot
    from pipeline.corpus.token_cache import tokenize_with_cache
    from pipeline.lake.late import wait_decision

    url = resolve_corpus_url(spec.target, corpus_root)
    decision = wait_decision(read_joined(ws), spec.wait.coverage, spec.wait.max)
    if not decision.ready:
        event(log, "snapshot waiting", corpus=spec.name, **decision.as_dict())
        try:
            c = open_corpus(url)
            return SnapshotInfo(url, c.version, False, len(c), c.lineage.get("content_hash", ""),
                                c.lineage.get("parent"), 0, "waiting", {**c.lineage, "wait": decision.as_dict()})
        except CorpusNotFound:
            return SnapshotInfo(url, "", False, 0, "", None, 0, "waiting", {"wait": decision.as_dict()})
    curated = storage.read_parquet(ws.curated_path(spec.name))
    model = resolve_model(base_model, models_dir)
    fingerprint = tokenizer_fingerprint(base_model, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows, untrainable, reuse = tokenize_with_cache(  # only rows new since the last snapshot are tokenized
        curated, lambda df: tokenize_format_rows(spec.format, df, tokenizer, spec.train.max_length, spec.tools_in_prompt),
        ws.root / "curated" / f"{spec.name}.tokens.parquet",
        {"format": spec.format, "tokenizer": fingerprint, "max_length": spec.train.max_length,
         "tools_in_prompt": spec.tools_in_prompt})
    event(log, "tokenized", corpus=spec.name, **reuse, untrainable=untrainable)
    lineage = {"filter": spec.filter, "format": spec.format, "workspace": ws.name,
               "source_partitions": joined_days(ws), "tokenizer": fingerprint, "tokens_reused": reuse["cached"],
               "max_length": spec.train.max_length,
               "dropped_untrainable": untrainable, "tools_in_prompt": spec.tools_in_prompt,
               "wait": decision.as_dict()}
    info = snapshot(rows, url, lineage=lineage, message=f"{spec.name}: {rows.height} rows, filter `{spec.filter}`")
    event(log, "snapshot", corpus=spec.name, corpus_ref=f"{spec.target}@{info.version}", new_version=info.created,
          rows=info.row_count, appended=info.appended, content_hash=info.content_hash, parent=info.parent,
          mode=info.mode)
    return info


def tokenizer_fingerprint(name: str, model_dir: str) -> str:
    """The tokenizer's name plus a hash of its files: a rebuilt local tokenizer under the same name
    ('tiny') must still force a full re-tokenization, not a delta append onto old token ids."""
    files = sorted(p for p in Path(model_dir).glob("*") if p.name.startswith(("tokenizer", "chat_template",
                                                                             "special_tokens")))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:12]
    return f"{name}#{digest}" if files else name


def refresh_lake(ws: Workspace) -> dict[str, int]:
    """Bring the lake up to date with the landing area without an orchestrator (CLI path):
    every landed day validated, all outcomes ingested, every day re-joined."""
    from pipeline.lake.join import join_day

    outcomes, _ = lake.ingest_outcomes(ws)
    lake.ingest_preferences(ws)
    counts = {"days": 0, "trajectories": 0, "quarantined": 0}
    for day in ws.days("trajectory"):
        df, stats = lake.ingest_trajectories(ws, day)
        join_day(ws, day, outcomes)
        counts["days"] += 1
        counts["trajectories"] += df.height
        counts["quarantined"] += stats.quarantined
    return counts


def check_corpus(spec: CorpusSpec, corpus_root: str) -> dict[str, Any]:
    from pipeline.corpus.store import open_corpus, resolve_corpus_url

    c = open_corpus(resolve_corpus_url(spec.target, corpus_root))
    df = c.to_polars()
    masks = [c for c in ("loss_mask", "chosen_mask", "completion_mask") if c in df.columns]
    no_tokens = int((df[masks[0]].list.sum() == 0).sum()) if df.height and masks else \
        int((df["n_tokens"] == 0).sum()) if df.height else 0
    train = set(df.filter(pl.col("split") == "train")["task_id"].drop_nulls().to_list())
    evals = set(df.filter(pl.col("split") == "eval")["task_id"].drop_nulls().to_list())
    leaked = sorted(train & evals)
    return {"passed": df.height > 0 and no_tokens == 0 and not leaked, "version": c.version,
            "rows": df.height, "rows_without_trainable_tokens": no_tokens, "tasks_in_both_splits": len(leaked),
            "train_rows": int((df["split"] == "train").sum()), "eval_rows": int((df["split"] == "eval").sum())}
