"""The training stage: one checkpoint per (corpus version, recipe, starting model), by the corpus's format.

SFT trains on the pre-tokenized ids and loss masks stored in the corpus; DPO/KTO and GRPO on its
conversational columns. A spec with `init_from` starts from another corpus's promoted checkpoint
(the usual SFT → DPO/RL chain). The same inputs reuse the checkpoint instead of retraining.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import orjson

from pipeline.config import CorpusSpec
from pipeline.logs import event, get_logger

TRAIN_QUERY = "SELECT * WHERE \"split\" = 'train'"
log = get_logger("train")


def starting_model(spec: CorpusSpec, base_model_path: str, checkpoints_root: Path) -> str:
    """The base model, or the promoted checkpoint of the corpus named in `init_from`."""
    if not spec.init_from:
        return base_model_path
    from pipeline.evaluate.stage import finished_checkpoints, promoted_checkpoint

    src = checkpoints_root / spec.init_from
    chosen = promoted_checkpoint(src) or next((c["checkpoint_dir"] for c in reversed(finished_checkpoints(src))), None)
    if chosen is None:
        raise FileNotFoundError(f"{spec.name}.init_from={spec.init_from!r} has no checkpoint yet: "
                                f"materialize checkpoint_{spec.init_from} first")
    return chosen


def _recipe_key(spec: CorpusSpec, start: str) -> str:
    train = spec.train.model_dump()
    if train["devices"] == 1:  # keys from before `devices` existed stay valid
        del train["devices"]
    blob = orjson.dumps({"train": train, "format": spec.format, "start": start},
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(blob).hexdigest()[:8]


def _rows(corpus: Any, spec: CorpusSpec) -> list[dict[str, Any]]:
    """Preference and RL rows (text: TRL tokenizes pairs and prompts itself). SFT never comes here: it
    streams token ids straight from the pinned version (`train_sft_corpus`)."""
    rows = corpus.query(TRAIN_QUERY).rows()
    return rows if spec.tools_in_prompt else [{**r, "tools": "[]"} for r in rows]


def _train(spec: CorpusSpec, corpus: Any, ref: str, corpus_root: str, start: str, out: Path, tracker: Any,
           tags: dict[str, str]) -> Any:
    t = spec.train  # batch_size is per optimizer step: each of the `devices` processes takes an equal share
    common = {"base_model": start, "output_dir": str(out), "max_steps": t.max_steps, "seed": t.seed,
              "devices": t.devices}
    if spec.format == "sft":
        from pipeline.train.sft import SFTRecipe, train_sft_corpus

        recipe = SFTRecipe(**common, learning_rate=t.learning_rate, per_device_batch_size=t.batch_size // t.devices,
                           max_length=t.max_length)
        return train_sft_corpus(ref, recipe, root=corpus_root, query=TRAIN_QUERY, tracker=tracker, run_tags=tags)
    rows = _rows(corpus, spec)
    if spec.format in ("dpo", "kto"):
        from pipeline.train.preference import PrefRecipe, train_pref

        recipe = PrefRecipe(**common, trainer=spec.format, learning_rate=t.learning_rate, beta=t.beta,
                            per_device_batch_size=max(2, t.batch_size // t.devices), max_length=t.max_length,
                            lora=t.lora)
        return train_pref(rows, recipe, tracker=tracker, run_tags=tags)
    from pipeline.train.grpo import RLRecipe, train_grpo

    batch = max(t.num_generations, t.batch_size - t.batch_size % t.num_generations)
    recipe = RLRecipe(**common, learning_rate=t.learning_rate, per_device_batch_size=max(1, batch // t.devices),
                      num_generations=t.num_generations, max_completion_length=t.max_completion_length, lora=t.lora)
    return train_grpo(rows, recipe, tracker=tracker, run_tags=tags)


def registered_name(corpus: str) -> str:
    """The MLflow registered model that collects every checkpoint trained on one corpus."""
    return f"tracemill-{corpus}"


def register(tracker: Any, run_id: str, checkpoint_dir: Path, corpus: str, tags: dict[str, str]) -> dict[str, Any]:
    """Register a trained checkpoint as the next version of `tracemill-<corpus>`: `model_uri` etc., or
    `registration_error` when the registry refuses, since the training it follows must not be lost."""
    try:
        return tracker.register_checkpoint(run_id, checkpoint_dir, registered_name(corpus), tags=tags)
    except Exception as exc:  # noqa: BLE001 - an hour of training must not be lost to the registry
        error = f"{type(exc).__name__}: {exc}"[:500]
        event(log, "model registration failed", logging.WARNING, corpus=corpus, checkpoint=str(checkpoint_dir),
              mlflow_run_id=run_id, error=error)
        return {"registration_error": error}


def train_corpus(spec: CorpusSpec, corpus_root: str, base_model_path: str, checkpoints_root: Path,
                 tracker: Any, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Train on the train split of the corpus's latest version; returns the checkpoint summary."""
    from pipeline.corpus.store import open_corpus, resolve_corpus_url

    corpus = open_corpus(resolve_corpus_url(spec.target, corpus_root))
    ref = f"{spec.target}@{corpus.version}"
    start = starting_model(spec, base_model_path, checkpoints_root)
    out = checkpoints_root / spec.name / f"{corpus.version}-{_recipe_key(spec, start)}"
    summary_path = out / "tracemill_train.json"
    if summary_path.exists():
        return orjson.loads(summary_path.read_bytes()) | {"reused": True}
    res = _train(spec, corpus, ref, corpus_root, start, out, tracker,
                 {**(tags or {}), "corpus": ref, "content_hash": corpus.lineage.get("content_hash", ""),
                  "format": spec.format, "start_model": start})
    summary = {"checkpoint_dir": str(res.checkpoint_dir), "corpus_ref": ref, "format": spec.format,
               "steps": res.steps, "final_loss": float(res.final_loss),
               "first_loss": float(res.losses[0]) if res.losses else float("nan"), "losses": list(res.losses),
               "tokens_per_second": float(res.tokens_per_second), "train_seconds": float(res.train_seconds),
               "mlflow_run_id": res.mlflow_run_id, "base_model": start, "train_rows": res.train_rows,
               "size_mb": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6, 2),
               "finished_at": time.time()}
    if tracker is not None and res.mlflow_run_id:
        summary |= register(tracker, res.mlflow_run_id, out, spec.name, {"corpus": ref, "format": spec.format})
    summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary | {"reused": False}
