"""Supervised fine-tuning with TRL on pre-tokenized corpus rows, tracked in MLflow.

Rows carry `input_ids` and `loss_mask` made by `pipeline.chat` (the base model's own template), so training
never re-renders text: the dataset handed to `SFTTrainer` has `input_ids` + `assistant_masks` columns, which TRL 1.16
folds into `labels` (-100 where the mask is 0) during dataset preparation, with
`assistant_only_loss=False` (that flag would re-render `messages` through the chat template).
Rows without a trainable token are dropped here: they would give a NaN (or silently zero) loss.

`recipe.devices > 1` trains in a child process group (`pipeline.train.launch`: `accelerate launch`, one process a
device, DDP) that runs `fit_sft` on the prepared rows; rank 0 saves and logs to the parent's MLflow run.
Device settings (precision, attention kernel) come from `pipeline.train.devices`, the same for every trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pipeline.train import launch
from pipeline.train.devices import load_causal_lm, settings_for
from pipeline.train.recipes import SFTRecipe
from pipeline.train.result import TrainResult
from pipeline.train.tracked_run import (
    common_args,
    load_tokenizer,
    lora_config,
    quiet_progress,
    run_tracked,
    save_merged,
    save_with_trainer,
    use_lora,
)


def prepare_rows(rows: Iterable[Mapping[str, Any]], max_length: int) -> tuple[list[list[int]], list[list[int]], int]:
    """Plain int lists (rows may hold numpy arrays), truncated; rows left with no trainable token skipped."""
    import numpy as np

    ids_out, masks_out, skipped = [], [], 0
    for row in rows:
        ids = np.asarray(row["input_ids"], dtype=np.int64)[:max_length]
        mask = np.asarray(row["loss_mask"], dtype=np.int64)[:max_length]
        if len(ids) != len(mask):
            raise ValueError(f"input_ids and loss_mask differ in length ({len(ids)} vs {len(mask)})")
        if len(ids) < 2 or not mask[1:].any():  # the first token is never predicted
            skipped += 1
            continue
        ids_out.append(ids.tolist())
        masks_out.append((mask != 0).astype(np.int64).tolist())
    return ids_out, masks_out, skipped


EVAL_ROWS = 64  # held-out rows scored at each eval step: enough for a curve, cheap next to training


def sft_config(recipe: SFTRecipe, evaluate: bool = False) -> Any:
    """The `SFTConfig` for a recipe: the shared TrainingArguments, pre-tokenized rows, no packing; with
    `evaluate`, the eval split's loss about four times a run, so MLflow shows an `eval_loss` curve."""
    from trl import SFTConfig

    args = common_args(recipe)
    if evaluate:
        args |= {"eval_strategy": "steps", "eval_steps": max(1, recipe.max_steps // 4),
                 "per_device_eval_batch_size": recipe.per_device_batch_size}
    return SFTConfig(**args, max_length=recipe.max_length, weight_decay=recipe.weight_decay,
                     assistant_only_loss=False, packing=False)


def build_trainer(ids: list[list[int]], masks: list[list[int]], recipe: SFTRecipe, callbacks: list | None = None):
    """An `SFTTrainer` over pre-tokenized rows; TRL turns `assistant_masks` into `labels` (-100 = no loss)
    while preparing the dataset, which `trainer.train_dataset["labels"]` shows."""
    import datasets

    return sft_trainer(datasets.Dataset.from_dict({"input_ids": ids, "assistant_masks": masks}), recipe, callbacks)


def sft_trainer(dataset: Any, recipe: SFTRecipe, callbacks: list | None = None, eval_dataset: Any = None):
    """An `SFTTrainer` over a `datasets.Dataset` or `IterableDataset` of `input_ids` + `assistant_masks`
    (and the same columns held out in `eval_dataset`, scored during training)."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    tokenizer = load_tokenizer(recipe.base_model)  # the checkpoint ships the template its corpus was rendered with
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with quiet_progress():
        model = load_causal_lm(recipe.base_model, settings_for(recipe.device))
        trainer = SFTTrainer(model=model, args=sft_config(recipe, eval_dataset is not None), train_dataset=dataset,
                             eval_dataset=eval_dataset, processing_class=tokenizer,
                             callbacks=callbacks,
                             peft_config=lora_config(recipe.lora_r, recipe.lora_alpha) if use_lora(recipe) else None)
    trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; the numbers go to MLflow instead
    return trainer


def train_sft(rows: Iterable[Mapping[str, Any]], recipe: SFTRecipe, tracker: Any = None,
              run_tags: Mapping[str, str] | None = None) -> TrainResult:
    """Fine-tune `recipe.base_model` on pre-tokenized rows and save the result to `recipe.output_dir`."""
    ids, masks, skipped = prepare_rows(rows, recipe.max_length)
    if not ids:
        raise ValueError(f"no row has a trainable token ({skipped} skipped): nothing to train on")
    if launch.should_launch(recipe.devices):
        return launch.launch("sft", {"ids": ids, "masks": masks, "skipped": skipped}, recipe, tracker, run_tags)
    return fit_sft(ids, masks, skipped, recipe, tracker, run_tags)


def train_sft_corpus(ref: str, recipe: SFTRecipe, *, root: str | None = None, query: str | None = None,
                     tracker: Any = None, run_tags: Mapping[str, str] | None = None,
                     eval_query: str | None = None) -> TrainResult:
    """Fine-tune on a pinned corpus version (`org/name@vN`, optionally a TQL slice), streamed by `CorpusLoader`
    (column block reads, shuffled by block) instead of materialized as Python rows: memory stays a few
    buffers whatever the corpus size, and a launched group gets the loader's settings, not the rows.
    The loader drops rows without a trainable token, as `prepare_rows` does; batches are cut per optimizer
    micro-step over all devices, so rows of similar length share a batch. `eval_query` (the eval split)
    gives up to `EVAL_ROWS` held-out rows whose loss is logged as `eval_loss` during training."""
    from pipeline.train.loader import CorpusLoader  # torch and deeplake: only when streaming

    corpus = {"ref": ref, "root": root, "query": query, "max_length": recipe.max_length, "seed": recipe.seed,
              "batch_size": recipe.per_device_batch_size * recipe.devices}
    loader = CorpusLoader(**corpus)  # scans the loss masks once: exact row counts before any training
    selected = len(loader.corpus.query(query)) if query else len(loader.corpus)
    stats = {"train_rows": loader.num_rows, "skipped_rows": selected - loader.num_rows, "corpus_ref": ref}
    if not loader.num_rows:
        raise ValueError(f"no row of {ref} has a trainable token ({selected} skipped): nothing to train on")
    held_out = loader.corpus.query(eval_query).rows()[:EVAL_ROWS] if eval_query else []
    ids, masks, _ = prepare_rows(held_out, recipe.max_length)
    evaluation = {"ids": ids, "masks": masks} if ids else None
    if launch.should_launch(recipe.devices):
        return launch.launch("sft", {"corpus": loader.config, "stats": stats, "evaluation": evaluation}, recipe,
                             tracker, run_tags)
    return fit_sft_corpus(loader.config, stats, recipe, tracker, run_tags, evaluation=evaluation)


def fit_sft(ids: list[list[int]], masks: list[list[int]], skipped: int, recipe: SFTRecipe, tracker: Any = None,
            run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train on prepared rows in this process (one rank of a launched group, or alone)."""
    import datasets

    stats = {"train_rows": len(ids), "skipped_rows": skipped, "trainable_tokens": sum(map(sum, masks))}
    return _fit(lambda: datasets.Dataset.from_dict({"input_ids": ids, "assistant_masks": masks}), stats, recipe,
                tracker, run_tags, callbacks)


def fit_sft_corpus(corpus: Mapping[str, Any], stats: Mapping[str, Any], recipe: SFTRecipe, tracker: Any = None,
                   run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = (),
                   evaluation: Mapping[str, list] | None = None) -> TrainResult:
    """Train on a corpus stream (`CorpusLoader` settings) in this process. Every epoch reshuffles (the stream
    cycles until `max_steps`); under DDP rank 0 reads and the Trainer hands each rank its share of a batch."""
    from pipeline.train.loader import to_iterable_dataset  # torch and deeplake: only when streaming

    settings = {k: v for k, v in corpus.items() if k != "ref"}
    return _fit(lambda: to_iterable_dataset(corpus["ref"], epochs=None, **settings), stats, recipe, tracker, run_tags,
                callbacks, evaluation)


def fit_launched(payload: Mapping[str, Any], recipe: SFTRecipe, tracker: Any = None,
                 run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """One rank of a launched group: `payload` is what `train_sft` (prepared rows) or `train_sft_corpus`
    (the loader's settings) handed to `launch`."""
    if "corpus" in payload:
        return fit_sft_corpus(payload["corpus"], payload["stats"], recipe, tracker, run_tags, callbacks,
                              payload.get("evaluation"))
    return fit_sft(payload["ids"], payload["masks"], payload["skipped"], recipe, tracker, run_tags, callbacks)


def _fit(make_dataset: Callable[[], Any], stats: Mapping[str, Any], recipe: SFTRecipe, tracker: Any,
         run_tags: Mapping[str, str] | None, callbacks: Sequence[Any],
         evaluation: Mapping[str, list] | None = None) -> TrainResult:
    """The SFT run itself; the dataset is made once the MLflow run is open (a stream opens the corpus then)."""
    import datasets

    held_out = datasets.Dataset.from_dict({"input_ids": evaluation["ids"], "assistant_masks": evaluation["masks"]}) \
        if evaluation else None
    return run_tracked("sft", recipe, lambda cbs: sft_trainer(make_dataset(), recipe, cbs, held_out), stats, tracker,
                       run_tags, callbacks, save=save_merged if use_lora(recipe) else save_with_trainer)  # adapters merged
