"""Supervised fine-tuning with TRL on pre-tokenized corpus rows, tracked in MLflow.

Rows carry `input_ids` and `loss_mask` made by `pipeline.chat_format`, so training never re-renders
text: the dataset handed to `SFTTrainer` has `input_ids` + `assistant_masks` columns, which TRL 1.16
folds into `labels` (-100 where the mask is 0) during dataset preparation, with
`assistant_only_loss=False` (that flag would re-render `messages` through the chat template).
Rows without a trainable token are dropped here: they would give a NaN (or silently zero) loss.

`recipe.devices > 1` trains in a child process group (`pipeline.train.launch`: `accelerate launch`, one process a
device, DDP) that runs `fit_sft` on the prepared rows; rank 0 saves and logs to the parent's MLflow run.
Device settings (precision, attention kernel) come from `pipeline.train.devices`, the same for every trainer.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.train.devices import is_main_process, load_causal_lm, settings_for, trainer_params
from pipeline.train.step_metrics import PaddingMeter, step_logger_for

DEVICES_HELP = ("Processes (one per GPU) that train together with DDP; > 1 starts them with `accelerate launch` "
                "(on CPU: gloo, for tests).")


class RecipeBase(BaseModel):
    """The settings every trainer's recipe shares with the same meaning and default; the rest differ in
    default or wording per trainer and stay in each recipe, where its help text can say why."""

    model_config = ConfigDict(extra="forbid")

    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA with bf16 when available.")
    devices: int = Field(1, ge=1, description=DEVICES_HELP)


class SFTRecipe(RecipeBase):
    """Everything that decides a training run; logged as MLflow params and saved next to the model."""

    base_model: str = Field(description="HF model id or local model directory to start from.")
    output_dir: str = Field(description="Where the fine-tuned model + tokenizer are saved (HF layout).")
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (after warmup).")
    per_device_batch_size: int = Field(16, ge=1, description="Sequences per device per micro-batch.")
    max_length: int = Field(512, ge=2, description="Sequences are truncated to this many tokens (keep start).")
    seed: int = Field(0, description="Seed for data order (and anything random in the trainer).")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warmup.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name (cosine, linear, constant…).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    logging_steps: int = Field(1, ge=1, description="Log loss / grad norm / lr every N steps.")
    run_name: str | None = Field(None, description="MLflow run name (default: sft-<output dir name>).")


@dataclass
class TrainResult:
    """What a run produced; `losses`/`grad_norms` are per logged step, `tokens` counts non-pad tokens seen."""

    checkpoint_dir: Path
    steps: int
    losses: list[float]
    final_loss: float
    train_seconds: float
    tokens_per_second: float
    mlflow_run_id: str | None
    tokens: int = 0
    train_rows: int = 0
    skipped_rows: int = 0
    grad_norms: list[float] = field(default_factory=list)
    world_size: int = 1

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.train_seconds if self.train_seconds else 0.0


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


def recipe_params(recipe: BaseModel) -> dict[str, Any]:
    """A recipe as MLflow params; `device` is logged once the trainer is built, as the device it resolved to
    (`trainer_params`), and the recipe's wish is kept as `device_requested`."""
    dumped = recipe.model_dump()
    return {**{k: v for k, v in dumped.items() if k != "device"}, "device_requested": dumped.get("device")}


def sft_config(recipe: SFTRecipe) -> Any:
    """The `SFTConfig` for a recipe: no checkpoints mid-run, no reporters (MLflow is ours), device defaults."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=recipe.output_dir, max_steps=recipe.max_steps, learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.per_device_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, max_length=recipe.max_length,
        seed=recipe.seed, data_seed=recipe.seed, warmup_steps=recipe.warmup_ratio,  # <1 means a ratio in transformers 5
        lr_scheduler_type=recipe.lr_scheduler_type, weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm, logging_steps=recipe.logging_steps, save_strategy="no",
        eval_strategy="no", report_to="none", disable_tqdm=True, assistant_only_loss=False, packing=False,
        dataloader_num_workers=0, **settings_for(recipe.device).training_args(),
    )


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No per-map / per-shard progress bars in pipeline logs; restores whatever was set before."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_on, hf_on = not datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if hf_on:
            hf_logging.enable_progress_bar()


def build_trainer(ids: list[list[int]], masks: list[list[int]], recipe: SFTRecipe, callbacks: list | None = None):
    """An `SFTTrainer` over pre-tokenized rows; TRL turns `assistant_masks` into `labels` (-100 = no loss)
    while preparing the dataset, which `trainer.train_dataset["labels"]` shows."""
    import datasets

    return sft_trainer(datasets.Dataset.from_dict({"input_ids": ids, "assistant_masks": masks}), recipe, callbacks)


def sft_trainer(dataset: Any, recipe: SFTRecipe, callbacks: list | None = None):
    """An `SFTTrainer` over a `datasets.Dataset` or `IterableDataset` of `input_ids` + `assistant_masks`."""
    from transformers import AutoTokenizer, PrinterCallback
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(recipe.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with quiet_progress():
        model = load_causal_lm(recipe.base_model, settings_for(recipe.device))
        trainer = SFTTrainer(model=model, args=sft_config(recipe), train_dataset=dataset, processing_class=tokenizer,
                             callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; the numbers go to MLflow instead
    return trainer


def train_sft(rows: Iterable[Mapping[str, Any]], recipe: SFTRecipe, tracker: Any = None,
              run_tags: Mapping[str, str] | None = None) -> TrainResult:
    """Fine-tune `recipe.base_model` on pre-tokenized rows and save the result to `recipe.output_dir`."""
    ids, masks, skipped = prepare_rows(rows, recipe.max_length)
    if not ids:
        raise ValueError(f"no row has a trainable token ({skipped} skipped): nothing to train on")
    from pipeline.train import launch

    if launch.should_launch(recipe.devices):
        return launch.launch("sft", {"ids": ids, "masks": masks, "skipped": skipped}, recipe, tracker, run_tags)
    return fit_sft(ids, masks, skipped, recipe, tracker, run_tags)


def train_sft_corpus(ref: str, recipe: SFTRecipe, *, root: str | None = None, query: str | None = None,
                     tracker: Any = None, run_tags: Mapping[str, str] | None = None) -> TrainResult:
    """Fine-tune on a pinned corpus version (`org/name@vN`, optionally a TQL slice), streamed by `CorpusLoader`
    (column block reads, shuffled by block) instead of materialized as Python rows: memory stays a few
    buffers whatever the corpus size, and a launched group gets the loader's settings, not the rows.
    The loader drops rows without a trainable token, as `prepare_rows` does; batches are cut per optimizer
    micro-step over all devices, so rows of similar length share a batch."""
    from pipeline.train.loader import CorpusLoader

    corpus = {"ref": ref, "root": root, "query": query, "max_length": recipe.max_length, "seed": recipe.seed,
              "batch_size": recipe.per_device_batch_size * recipe.devices}
    loader = CorpusLoader(**corpus)  # scans the loss masks once: exact row counts before any training
    selected = len(loader.corpus.query(query)) if query else len(loader.corpus)
    stats = {"train_rows": loader.num_rows, "skipped_rows": selected - loader.num_rows, "corpus_ref": ref}
    if not loader.num_rows:
        raise ValueError(f"no row of {ref} has a trainable token ({selected} skipped): nothing to train on")
    from pipeline.train import launch

    if launch.should_launch(recipe.devices):
        return launch.launch("sft_corpus", {"corpus": loader.config, "stats": stats}, recipe, tracker, run_tags)
    return fit_sft_corpus(loader.config, stats, recipe, tracker, run_tags)


def fit_sft(ids: list[list[int]], masks: list[list[int]], skipped: int, recipe: SFTRecipe, tracker: Any = None,
            run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train on prepared rows in this process (one rank of a launched group, or alone)."""
    import datasets

    stats = {"train_rows": len(ids), "skipped_rows": skipped, "trainable_tokens": sum(map(sum, masks))}
    return _fit(lambda: datasets.Dataset.from_dict({"input_ids": ids, "assistant_masks": masks}), stats, recipe,
                tracker, run_tags, callbacks)


def fit_sft_corpus(corpus: Mapping[str, Any], stats: Mapping[str, Any], recipe: SFTRecipe, tracker: Any = None,
                   run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train on a corpus stream (`CorpusLoader` settings) in this process. Every epoch reshuffles (the stream
    cycles until `max_steps`); under DDP rank 0 reads and the Trainer hands each rank its share of a batch."""
    from pipeline.train.loader import to_iterable_dataset

    settings = {k: v for k, v in corpus.items() if k != "ref"}
    return _fit(lambda: to_iterable_dataset(corpus["ref"], epochs=None, **settings), stats, recipe, tracker, run_tags,
                callbacks)


def _fit(make_dataset: Callable[[], Any], stats: Mapping[str, Any], recipe: SFTRecipe, tracker: Any,
         run_tags: Mapping[str, str] | None, callbacks: Sequence[Any]) -> TrainResult:
    """The SFT run itself. Only the main process writes files and talks to MLflow; `callbacks` are extra
    TrainerCallbacks (the launch worker's)."""
    import transformers
    import trl

    main = is_main_process()
    tracker = tracker if main else None
    out = Path(recipe.output_dir)
    recipe_path = out / "tracemill_recipe.json"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(json.dumps(recipe.model_dump(), indent=2))
    sink: dict[str, list[float]] = {"loss": [], "grad_norm": [], "num_tokens": []}
    with quiet_progress():
        params = {**recipe_params(recipe), **stats, "transformers": transformers.__version__, "trl": trl.__version__}
        run_ctx = (tracker.start_run(recipe.run_name or f"sft-{out.name}", params=params, tags=dict(run_tags or {}))
                   if tracker is not None else contextlib.nullcontext(None))
        with run_ctx as run:
            run_id = run.run_id if run is not None else None
            step_logger = step_logger_for(tracker, run_id, sink)
            trainer = sft_trainer(make_dataset(), recipe, [step_logger, *callbacks])
            step_logger.meter = PaddingMeter.install(trainer)
            if tracker is not None:
                tracker.log_params(trainer_params(trainer), run_id=run_id)
            start = time.perf_counter()
            state = trainer.train()
            seconds = time.perf_counter() - start
            trainer.save_model(str(out))  # writes on the main process only
            if main:
                trainer.processing_class.save_pretrained(str(out))
            tokens = int(sink["num_tokens"][-1]) if sink["num_tokens"] else 0
            result = TrainResult(
                checkpoint_dir=out, steps=int(state.global_step), losses=sink["loss"],
                final_loss=sink["loss"][-1] if sink["loss"] else float(state.training_loss),
                train_seconds=seconds, tokens_per_second=tokens / seconds if seconds else 0.0,
                mlflow_run_id=run_id, tokens=tokens, train_rows=int(stats["train_rows"]),
                skipped_rows=int(stats["skipped_rows"]), grad_norms=sink["grad_norm"],
                world_size=int(trainer.args.world_size))
            if tracker is not None:
                tracker.log_params({"parameters": sum(p.numel() for p in trainer.model.parameters())}, run_id=run_id)
                tracker.log_metrics({"final_loss": result.final_loss, "train_seconds": seconds,
                                     "mean_tokens_per_second": result.tokens_per_second,
                                     "steps_per_second": result.steps_per_second}, step=result.steps, run_id=run_id)
                tracker.set_tags({"checkpoint_dir": str(out)}, run_id=run_id)
                tracker.log_artifact(recipe_path, run_id=run_id)
    return result
