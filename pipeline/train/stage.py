"""The training stage: one checkpoint per (corpus version, recipe, starting model), by the corpus's format.

The corpus's format picks the training method (`pipeline.train.methods`): SFT streams the pre-tokenized ids
and loss masks stored in the corpus; DPO/KTO and GRPO read its conversational columns. A spec with
`init_from` starts from another corpus's promoted checkpoint (the usual SFT → DPO/RL chain). The same inputs
reuse the checkpoint instead of retraining.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import CorpusSpec
from pipeline.corpus.store import open_corpus, resolve_corpus_url
from pipeline.train.checkpoints import (
    SUMMARY_FILE,
    CheckpointInfo,
    finished_checkpoints,
    promoted_checkpoint,
    register,
)
from pipeline.train.methods import TrainSplit, method_for


def starting_model(spec: CorpusSpec, base_model_path: str, checkpoints_root: Path) -> str:
    """The base model, or the promoted checkpoint of the corpus named in `init_from`."""
    if not spec.init_from:
        return base_model_path
    src = checkpoints_root / spec.init_from
    chosen = promoted_checkpoint(src) or next((c.checkpoint_dir for c in reversed(finished_checkpoints(src))), None)
    if chosen is None:
        raise FileNotFoundError(f"{spec.name}.init_from={spec.init_from!r} has no checkpoint yet: "
                                f"materialize checkpoint_{spec.init_from} first")
    return chosen


def _recipe_key(spec: CorpusSpec, start: str) -> str:
    train = spec.train.model_dump()
    if train["devices"] == 1:  # keys from before `devices` existed stay valid
        del train["devices"]
    key: dict[str, Any] = {"train": train, "format": spec.format, "start": start}
    if spec.format == "rl" and (spec.environment or spec.rewards):  # what scores GRPO changes the checkpoint
        key["scoring"] = [spec.environment, spec.environment_config, spec.rewards]
    blob = orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(blob).hexdigest()[:8]


def recipe_for(spec: CorpusSpec, start: str, output_dir: str) -> Any:
    """The spec's recipe; a method that acts (GRPO) acts in the spec's environment, scored by its rewards."""
    recipe = method_for(spec.format).make_recipe(spec.train, start, output_dir)
    if "environment" in type(recipe).model_fields:
        recipe = type(recipe).model_validate({
            **recipe.model_dump(), "environment": spec.environment, "rewards": list(spec.rewards),
            "environment_config": dict(spec.environment_config), "episode_max_steps": spec.online.max_steps,
            "episode_max_new_tokens": spec.online.max_new_tokens, "timeout_s": spec.online.timeout_s,
            "tools_in_prompt": spec.tools_in_prompt})
    return recipe


def train_corpus(spec: CorpusSpec, corpus_root: str, base_model_path: str, checkpoints_root: Path,
                 tracker: Any, tags: dict[str, str] | None = None) -> CheckpointInfo:
    """Train on the train split of the corpus's latest version; returns the checkpoint's summary."""
    corpus = open_corpus(resolve_corpus_url(spec.target, corpus_root))
    ref = f"{spec.target}@{corpus.version}"
    start = starting_model(spec, base_model_path, checkpoints_root)
    out = checkpoints_root / spec.name / f"{corpus.version}-{_recipe_key(spec, start)}"
    summary_path = out / SUMMARY_FILE
    if summary_path.exists():
        return CheckpointInfo.read(summary_path, reused=True)
    method = method_for(spec.format)
    recipe = recipe_for(spec, start, str(out))
    split = TrainSplit(corpus, ref, corpus_root, tools_in_prompt=spec.tools_in_prompt)
    res = method.train(split, recipe, tracker, {**(tags or {}), "corpus": ref, "format": spec.format,
                                                "content_hash": corpus.lineage.get("content_hash", ""),
                                                "start_model": start})
    info = CheckpointInfo(
        checkpoint_dir=str(res.checkpoint_dir), corpus_ref=ref, format=spec.format, steps=res.steps,
        final_loss=float(res.final_loss), first_loss=float(res.losses[0]) if res.losses else float("nan"),
        losses=list(res.losses), tokens_per_second=float(res.tokens_per_second),
        train_seconds=float(res.train_seconds), mlflow_run_id=res.mlflow_run_id, base_model=start,
        train_rows=res.train_rows, size_mb=round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 2),
        finished_at=time.time())
    if tracker is not None and res.mlflow_run_id:
        tracker.log_corpus_input(res.mlflow_run_id, ref, f"{corpus.url}@{corpus.version}",
                                 corpus.lineage.get("content_hash", ""))
        info = dataclasses.replace(info, registration=register(tracker, res.mlflow_run_id, out, spec.name,
                                                               {"corpus": ref, "format": spec.format}))
    info.write(summary_path)
    return info
