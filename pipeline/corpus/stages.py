"""The corpus-side stage functions: curate the joined lake into rows of the spec's format, tokenize and
snapshot them as a corpus version, and check a snapshot is trainable. The Dagster assets and the CLI
call these and only turn their results into metadata, so every stage also runs without Dagster."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline import progress, storage
from pipeline.capture.workspace import Workspace
from pipeline.chat import chat_template_for
from pipeline.config import CorpusSpec
from pipeline.corpus.curate import CurationStats
from pipeline.corpus.heldout import heldout_ids
from pipeline.corpus.redact import Redactor
from pipeline.corpus.rows import build_rows
from pipeline.corpus.token_cache import tokenize_with_cache
from pipeline.corpus.tokenize import tokenize_format_rows
from pipeline.lake import ingest as lake
from pipeline.lake.filters import apply_filter
from pipeline.lake.late import wait_decision
from pipeline.lake.stages import joined_days, read_joined
from pipeline.logs import event, get_logger
from pipeline.models import require_prepared

if TYPE_CHECKING:
    from pipeline.corpus.store import SnapshotInfo

log = get_logger("stages")


@dataclass(frozen=True)
class CorpusCheck:
    """The blocking check on a snapshot: non-empty, every row trainable, no task in both splits, no train
    row of an environment's held-out task."""

    passed: bool
    version: str
    rows: int
    rows_without_trainable_tokens: int
    tasks_in_both_splits: int
    train_rows: int
    eval_rows: int
    heldout_tasks_in_train: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def redaction_key(ws: Workspace) -> bytes:
    """The workspace's key for the hash a redacted id keeps (`Redactor.redact_id`): random, made once, kept
    next to the lake and never in a corpus, so the pseudonym of `traj-<phone>` cannot be found by hashing
    every phone number, yet stays the same from one snapshot to the next."""
    path, key = ws.root / "redaction.key", secrets.token_hex(32).encode()
    if storage.is_remote(path):
        if not path.exists():
            path.write_bytes(key)
    elif not path.exists():  # owner-only from the first byte; link() never replaces: a racing curation keeps one key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes().strip()


def curate_corpus(ws: Workspace, spec: CorpusSpec) -> tuple[pl.DataFrame, CurationStats]:
    """Rows of the spec's format (sft/dpo/kto/rl) from every joined partition (+ explicit preferences)."""
    prefs = storage.read_parquet(ws.preferences_path) if ws.preferences_path.exists() else None
    redactor = Redactor(id_key=redaction_key(ws)) if spec.redact else None
    df, stats = build_rows(spec.format, read_joined(ws), prefs, spec, redactor, heldout=heldout_ids(ws, spec),
                           heldout_split=spec.heldout)
    if spec.heldout == "drop" and df.height:
        dropped = int((df["split"] == "drop").sum())
        df = df.filter(pl.col("split") != "drop")
        if dropped:
            stats.dropped["heldout_task"] += dropped
            stats.splits.pop("drop", None)
            stats.kept = df.height
    lake.write_parquet(df, ws.curated_path(spec.name))
    event(log, "curated", workspace=ws.name, corpus=spec.name, format=spec.format, rows_in=stats.input_rows,
          after_filter=stats.after_filter, rows_out=df.height, dropped=dict(stats.dropped),
          redacted=dict(stats.redactions))
    return df, stats


def _latest(url: str, mode: str, note: dict[str, Any]) -> SnapshotInfo:
    """The corpus's latest version, unchanged, with why no new one was made (`waiting`, `empty`)."""
    from pipeline.corpus.store import CorpusNotFound, CorpusVersionNotFound, SnapshotInfo, open_corpus

    try:
        c = open_corpus(url)
        return SnapshotInfo(url, c.version, False, len(c), c.lineage.get("content_hash", ""),
                            c.lineage.get("parent"), 0, mode, {**c.lineage, **note})
    except (CorpusNotFound, CorpusVersionNotFound):
        return SnapshotInfo(url, "", False, 0, "", None, 0, mode, note)


def empty_reason(joined: pl.DataFrame, spec: CorpusSpec, curated_rows: int, untrainable: int = 0) -> dict[str, Any]:
    """Why a snapshot came out empty, in the counts a user can act on: trajectories in the lake, how
    many have an outcome yet, what the filter kept and what curation then kept."""
    with_outcome = int((joined["n_outcomes"] > 0).sum()) if "n_outcomes" in joined.columns else 0
    kept = apply_filter(joined, spec.filter).height if joined.height else 0
    reason = (f"nothing to snapshot: {joined.height} trajectories, {with_outcome} with an outcome, filter "
              f"`{spec.filter or 'none'}` kept {kept}, curation kept {curated_rows}"
              f"{f', {untrainable} had no trainable tokens' if untrainable else ''}; no version made "
              "(pass --allow-empty to record an empty one)")
    return {"trajectories": joined.height, "with_outcome": with_outcome, "after_filter": kept,
            "curated": curated_rows, "untrainable": untrainable, "reason": reason}


def _refuse_empty(url: str, joined: pl.DataFrame, spec: CorpusSpec, curated: int, untrainable: int = 0) -> SnapshotInfo:
    why = empty_reason(joined, spec, curated, untrainable)
    event(log, "snapshot empty", corpus=spec.name, **why)
    return _latest(url, "empty", {"empty": why})


def snapshot_corpus(ws: Workspace, spec: CorpusSpec, corpus_root: str, base_model: str,
                    models_dir: Path, allow_empty: bool = False) -> SnapshotInfo:
    """Tokenize the curated rows and snapshot them: a new tag only when the content changed, only
    once the wait policy is satisfied (otherwise the latest version stays, marked `waiting`), and
    only when there are rows or `allow_empty` (otherwise mode `empty`, with the counts that say why:
    an empty v1 made before any outcome arrived is never what a curator wanted)."""
    from transformers import AutoTokenizer

    # the Deeplake store (deeplake: ~0.4 s) loads when a snapshot runs, not when the assets are defined
    from pipeline.corpus.store import resolve_corpus_url, snapshot

    url = resolve_corpus_url(spec.target, corpus_root)
    joined = read_joined(ws)
    decision = wait_decision(joined, spec.wait.coverage, spec.wait.max)
    if not decision.ready:
        event(log, "snapshot waiting", corpus=spec.name, **decision.as_dict())
        return _latest(url, "waiting", {"wait": decision.as_dict()})
    curated = storage.read_parquet(ws.curated_path(spec.name))
    if not curated.height and not allow_empty:
        return _refuse_empty(url, joined, spec, 0)
    model = require_prepared(base_model, models_dir)
    tokenizer = AutoTokenizer.from_pretrained(model)
    chat = chat_template_for(tokenizer)  # the model's own template, or its family's fallback (chosen by a probe)
    fingerprint = tokenizer_fingerprint(base_model, model, chat.fingerprint())
    with progress.stage("tokenize", unit="rows") as note:
        rows, untrainable, reuse = tokenize_with_cache(  # only rows new since the last snapshot are tokenized
            curated, lambda df: tokenize_format_rows(spec.format, df, tokenizer, spec.train.max_length,
                                                     spec.tools_in_prompt),
            ws.root / "curated" / f"{spec.name}.tokens.parquet",
            {"format": spec.format, "tokenizer": fingerprint, "max_length": spec.train.max_length,
             "tools_in_prompt": spec.tools_in_prompt})
        progress.report(reuse["tokenized"], reuse["tokenized"])
        note(f"{reuse['cached']} reused from the last snapshot, {untrainable} untrainable")
    event(log, "tokenized", corpus=spec.name, **reuse, untrainable=untrainable)
    if not rows.height and not allow_empty:  # every curated row was untrainable
        return _refuse_empty(url, joined, spec, curated.height, untrainable)
    lineage = {"filter": spec.filter, "format": spec.format, "workspace": ws.name,
               "source_partitions": joined_days(ws), "tokenizer": fingerprint, "chat_template": chat.describe(),
               "tokens_reused": reuse["cached"],
               "max_length": spec.train.max_length,
               "dropped_untrainable": untrainable, "tools_in_prompt": spec.tools_in_prompt,
               "wait": decision.as_dict()}
    with progress.stage("write", unit="rows") as note:
        info = snapshot(rows, spec.target, root=corpus_root, lineage=lineage,
                        message=f"{spec.name}: {rows.height} rows, filter `{spec.filter}`", allow_empty=allow_empty)
        note(f"{info.version or 'no version'} ({info.mode}, {info.row_count} rows)")
    event(log, "snapshot", corpus=spec.name, corpus_ref=f"{spec.target}@{info.version}", new_version=info.created,
          rows=info.row_count, appended=info.appended, content_hash=info.content_hash, parent=info.parent,
          mode=info.mode)
    return info


def tokenizer_fingerprint(name: str, model_dir: str, chat: str = "") -> str:
    """The tokenizer's name plus a hash of its files, plus the chat template rendering uses (family,
    native or fallback, hash of its text): a rebuilt local tokenizer under the same name ('tiny'), an
    edited template or a changed fallback must all force a full re-tokenization, not a delta append onto
    old token ids (the fingerprint is part of the token cache's and the snapshot's derivation key)."""
    files = sorted(p for p in Path(model_dir).glob("*") if p.name.startswith(("tokenizer", "chat_template",
                                                                             "special_tokens")))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()[:12]
    base = f"{name}#{digest}" if files else name
    return f"{base}|{chat}" if chat else base


def check_corpus(spec: CorpusSpec, corpus_root: str, heldout: frozenset[str] = frozenset()) -> CorpusCheck:
    """Check the latest snapshot; `heldout` are the held-out task ids (`heldout.heldout_ids`)."""
    from pipeline.corpus.store import CorpusNotFound, CorpusVersionNotFound, open_corpus, resolve_corpus_url

    try:  # deeplake, as above
        c = open_corpus(resolve_corpus_url(spec.target, corpus_root))
    except (CorpusNotFound, CorpusVersionNotFound):  # every snapshot so far was empty or waiting
        return CorpusCheck(False, "", 0, 0, 0, 0, 0)
    df = c.to_polars()
    masks = [c for c in ("loss_mask", "chosen_mask", "completion_mask") if c in df.columns]
    no_tokens = int((df[masks[0]].list.sum() == 0).sum()) if df.height and masks else \
        int((df["n_tokens"] == 0).sum()) if df.height else 0
    train = set(df.filter(pl.col("split") == "train")["task_id"].drop_nulls().to_list())
    evals = set(df.filter(pl.col("split") == "eval")["task_id"].drop_nulls().to_list())
    leaked, trained_heldout = sorted(train & evals), sorted(train & heldout)
    return CorpusCheck(passed=df.height > 0 and no_tokens == 0 and not leaked and not trained_heldout,
                       version=c.version, rows=df.height, rows_without_trainable_tokens=no_tokens,
                       tasks_in_both_splits=len(leaked), train_rows=int((df["split"] == "train").sum()),
                       eval_rows=int((df["split"] == "eval").sum()), heldout_tasks_in_train=len(trained_heldout))
