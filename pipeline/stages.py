"""One function per pipeline stage, composing the library modules. The Dagster assets call these and
only turn their results into metadata, so every stage also runs (and is tested) without Dagster."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from pipeline import lake
from pipeline.config import CorpusSpec
from pipeline.curate import CurationStats, curate
from pipeline.workspace import Workspace


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
        for r in pl.read_parquet(p, columns=["messages_json", "tools_json"]).iter_rows(named=True):
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
        from pipeline.tiny_model import build_tiny_model

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
    df, stats = curate(read_joined(ws), filter_expr=spec.filter, eval_fraction=spec.eval_fraction,
                       redact=spec.redact)
    lake.write_parquet(df, ws.curated_path(spec.name))
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

    from pipeline.corpus import CorpusNotFound, SnapshotInfo, open_corpus, resolve_corpus_url, snapshot
    from pipeline.late import wait_decision

    url = resolve_corpus_url(spec.target, corpus_root)
    decision = wait_decision(read_joined(ws), spec.wait.coverage, spec.wait.max)
    if not decision.ready:
        try:
            c = open_corpus(url)
            return SnapshotInfo(url, c.version, False, len(c), c.lineage.get("content_hash", ""),
                                c.lineage.get("parent"), 0, "waiting", {**c.lineage, "wait": decision.as_dict()})
        except CorpusNotFound:
            return SnapshotInfo(url, "", False, 0, "", None, 0, "waiting", {"wait": decision.as_dict()})
    curated = pl.read_parquet(ws.curated_path(spec.name))
    model = resolve_model(base_model, models_dir)
    rows, untrainable = tokenize_rows(curated, AutoTokenizer.from_pretrained(model), spec.train.max_length,
                                      spec.tools_in_prompt)
    lineage = {"filter": spec.filter, "format": spec.format, "workspace": ws.name,
               "source_partitions": joined_days(ws), "tokenizer": base_model,
               "dropped_untrainable": untrainable, "tools_in_prompt": spec.tools_in_prompt,
               "wait": decision.as_dict()}
    return snapshot(rows, url, lineage=lineage, message=f"{spec.name}: {rows.height} rows, filter `{spec.filter}`")


def refresh_lake(ws: Workspace) -> dict[str, int]:
    """Bring the lake up to date with the landing area without an orchestrator (CLI path):
    every landed day validated, all outcomes ingested, every day re-joined."""
    from pipeline.join import join_day

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
    from pipeline.corpus import open_corpus, resolve_corpus_url

    c = open_corpus(resolve_corpus_url(spec.target, corpus_root))
    df = c.to_polars()
    no_tokens = int((df["loss_mask"].list.sum() == 0).sum()) if df.height else 0
    train = set(df.filter(pl.col("split") == "train")["task_id"].drop_nulls().to_list())
    evals = set(df.filter(pl.col("split") == "eval")["task_id"].drop_nulls().to_list())
    leaked = sorted(train & evals)
    return {"passed": df.height > 0 and no_tokens == 0 and not leaked, "version": c.version,
            "rows": df.height, "rows_without_trainable_tokens": no_tokens, "tasks_in_both_splits": len(leaked),
            "train_rows": int((df["split"] == "train").sum()), "eval_rows": int((df["split"] == "eval").sum())}


# ---- training and evaluation --------------------------------------------------------------------
def _recipe_key(spec: CorpusSpec, base_model: str) -> str:
    blob = orjson.dumps({"train": spec.train.model_dump(), "format": spec.format, "base": base_model},
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(blob).hexdigest()[:8]


def train_corpus(spec: CorpusSpec, corpus_root: str, base_model: str, models_dir: Path, checkpoints: Path,
                 tracker: Any, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Train on the train split of the corpus's latest version. The same version and recipe reuse the
    existing checkpoint, so re-running the graph on unchanged data does not retrain."""
    from pipeline.corpus import open_corpus, resolve_corpus_url
    from pipeline.training import SFTRecipe, train_sft

    url = resolve_corpus_url(spec.target, corpus_root)
    corpus = open_corpus(url)
    ref = f"{spec.target}@{corpus.version}"
    out = checkpoints / f"{corpus.version}-{_recipe_key(spec, base_model)}"
    summary_path = out / "tracemill_train.json"
    if summary_path.exists():
        return orjson.loads(summary_path.read_bytes()) | {"reused": True}
    train = corpus.query("SELECT * WHERE \"split\" = 'train'").rows(["input_ids", "loss_mask"])
    t = spec.train
    recipe = SFTRecipe(base_model=resolve_model(base_model, models_dir), output_dir=str(out),
                       max_steps=t.max_steps, learning_rate=t.learning_rate, per_device_batch_size=t.batch_size,
                       max_length=t.max_length, seed=t.seed)
    res = train_sft(train, recipe, tracker=tracker,
                    run_tags={**(tags or {}), "corpus": ref, "content_hash": corpus.lineage.get("content_hash", "")})
    summary = {"checkpoint_dir": str(res.checkpoint_dir), "corpus_ref": ref, "steps": res.steps,
               "final_loss": float(res.final_loss), "first_loss": float(res.losses[0]) if res.losses else float("nan"),
               "tokens_per_second": float(res.tokens_per_second), "train_seconds": float(res.train_seconds),
               "mlflow_run_id": res.mlflow_run_id, "base_model": base_model, "train_rows": len(train),
               "size_mb": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 2),
               "finished_at": time.time()}
    summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary | {"reused": False}


def latest_checkpoint(checkpoints: Path) -> dict[str, Any]:
    done = sorted(checkpoints.glob("*/tracemill_train.json"), key=lambda p: orjson.loads(p.read_bytes())["finished_at"])
    if not done:
        raise FileNotFoundError(f"no finished checkpoint under {checkpoints}: materialize the checkpoint asset first")
    return orjson.loads(done[-1].read_bytes())


def evaluate_corpus(spec: CorpusSpec, corpus_root: str, checkpoints: Path, tracker: Any = None) -> dict[str, Any]:
    """Evaluate the latest checkpoint on the eval slice (a TQL query) of the version it was trained on."""
    from pipeline.corpus import open_corpus, resolve_corpus_url
    from pipeline.evaluation import evaluate_checkpoint

    ckpt = latest_checkpoint(checkpoints)
    version = ckpt["corpus_ref"].rsplit("@", 1)[1]
    corpus = open_corpus(f"{resolve_corpus_url(spec.target, corpus_root)}@{version}")
    rows = corpus.query(spec.eval.query).rows()
    if not spec.tools_in_prompt:  # prompts must look like the training sequences did
        rows = [{**r, "tools": "[]"} for r in rows]
    metrics = evaluate_checkpoint(ckpt["checkpoint_dir"], rows, max_examples=spec.eval.max_examples,
                                  max_new_tokens=spec.eval.max_new_tokens)
    if tracker is not None and ckpt.get("mlflow_run_id"):
        tracker.log_metrics_to_run(ckpt["mlflow_run_id"],
                                   {f"eval_{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
    table = "| metric | value |\n|---|---|\n" + "".join(
        f"| {k} | {v:.4f} |\n" if isinstance(v, float) else f"| {k} | {v} |\n" for k, v in metrics.items())
    return {"metrics": metrics, "corpus_ref": ckpt["corpus_ref"], "query": spec.eval.query,
            "checkpoint": ckpt["checkpoint_dir"], "markdown": table, "mlflow_run_id": ckpt.get("mlflow_run_id")}
