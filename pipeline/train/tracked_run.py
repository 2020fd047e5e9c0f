"""One tracked training run, whichever TRL trainer: the MLflow run around it, step metrics, the checkpoint
saved as a plain Hugging Face model directory, and the `TrainResult`.

Every trainer (SFT, DPO/KTO, GRPO) hands `run_tracked` a function that builds its TRL trainer; the rest
(params, tags, per-step metrics, padding meter, saving, final metrics) is the same for all, here once.
In a launched group every rank trains; only the main process writes files and talks to MLflow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.chat import adopt_template
from pipeline.jsonio import dumps_json
from pipeline.models import resolve_lora
from pipeline.train.devices import is_main_process, load_causal_lm, settings_for, trainer_params
from pipeline.train.recipes import RecipeBase, recipe_params
from pipeline.train.result import TrainResult
from pipeline.train.step_metrics import PaddingMeter, step_logger_for


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


def common_args(recipe: Any) -> dict[str, Any]:
    """TrainingArguments shared by our TRL configs: no mid-run checkpoints, no reporters (MLflow is ours),
    device defaults."""
    return dict(
        output_dir=recipe.output_dir, max_steps=recipe.max_steps, learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.per_device_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, seed=recipe.seed, data_seed=recipe.seed,
        warmup_steps=recipe.warmup_ratio,  # <1 means a ratio in transformers 5
        lr_scheduler_type=recipe.lr_scheduler_type, max_grad_norm=recipe.max_grad_norm,
        logging_steps=recipe.logging_steps, save_strategy="no", eval_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, **settings_for(recipe.device, recipe.precision).training_args())


def use_lora(recipe: Any) -> bool:
    """The recipe's `lora` decided for its base model ("auto": above 1B parameters)."""
    return resolve_lora(getattr(recipe, "lora", False), recipe.base_model)


def lora_config(r: int, alpha: int) -> Any:
    """LoRA on every linear layer but the LM head (TRL's DPO/KTO read `lm_head.weight` directly)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def load_tokenizer(base_model: str) -> Any:
    """The base model's tokenizer with the chat template its corpora are rendered with (`pipeline.chat`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    adopt_template(tokenizer)
    return tokenizer


def load_policy(base_model: str, device: str = "auto") -> tuple[Any, Any]:
    """fp32 model (the trainer autocasts on GPU) with the device's attention kernel, and its tokenizer,
    with a pad token the model agrees on, and the chat template its corpora were rendered with."""
    tokenizer = load_tokenizer(base_model)  # the checkpoint ships the template its corpus was rendered with
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_causal_lm(base_model, settings_for(device))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_merged(trainer: Any, out: Path, main: bool) -> Any:
    """A PeftModel ships as base + merged adapters, a plain model as itself; returns the saved model."""
    model = trainer.model
    if main:
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(str(out))
        trainer.processing_class.save_pretrained(str(out))
    return model


def save_with_trainer(trainer: Any, out: Path, main: bool) -> Any:
    """`Trainer.save_model` (every rank calls it; the main process writes, training args included)."""
    trainer.save_model(str(out))
    if main:
        trainer.processing_class.save_pretrained(str(out))
    return trainer.model


def run_tracked(kind: str, recipe: RecipeBase, build: Callable[[list], Any], params: Mapping[str, Any],
                tracker: Any = None, run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = (),
                save: Callable[[Any, Path, bool], Any] = save_merged) -> TrainResult:
    """Train what `build(callbacks)` returns inside an MLflow run (tagged `trainer=<kind>`) and save it with
    `save`. `params` (row counts…) are logged with the recipe; `train_rows`/`skipped_rows` reach the result."""
    import transformers
    import trl
    from transformers import PrinterCallback

    main = is_main_process()
    tracker = tracker if main else None
    out = Path(recipe.output_dir)
    recipe_path = out / "tracemill_recipe.json"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(dumps_json(recipe.model_dump(), indent=2))
    sink: dict[str, list[float]] = {"loss": [], "grad_norm": [], "num_tokens": []}
    all_params = {**recipe_params(recipe), **params, "transformers": transformers.__version__, "trl": trl.__version__}
    run_ctx = (tracker.start_run(recipe.run_name or f"{kind}-{out.name}", params=all_params,
                                 tags={"trainer": kind, **dict(run_tags or {})})
               if tracker is not None else contextlib.nullcontext(None))
    with quiet_progress(), run_ctx as run:
        run_id = run.run_id if run is not None else None
        step_logger = step_logger_for(tracker, run_id, sink)
        trainer = build([step_logger, *callbacks])
        step_logger.meter = PaddingMeter.install(trainer)
        trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; the numbers go to MLflow instead
        if tracker is not None:
            tracker.log_params(trainer_params(trainer), run_id=run_id)
        start = time.perf_counter()
        state = trainer.train()
        seconds = time.perf_counter() - start
        model = save(trainer, out, main)
        tokens = int(sink["num_tokens"][-1]) if sink["num_tokens"] else 0
        result = TrainResult(
            checkpoint_dir=out, steps=int(state.global_step), losses=sink["loss"],
            final_loss=sink["loss"][-1] if sink["loss"] else float(state.training_loss), train_seconds=seconds,
            tokens_per_second=tokens / seconds if seconds else 0.0, mlflow_run_id=run_id, tokens=tokens,
            train_rows=int(params.get("train_rows", 0)), skipped_rows=int(params.get("skipped_rows", 0)),
            grad_norms=sink["grad_norm"], world_size=int(trainer.args.world_size))
        if tracker is not None:
            tracker.log_params({"parameters": sum(p.numel() for p in model.parameters())}, run_id=run_id)
            tracker.log_metrics({"final_loss": result.final_loss, "train_seconds": seconds,
                                 "mean_tokens_per_second": result.tokens_per_second,
                                 "steps_per_second": result.steps_per_second}, step=result.steps, run_id=run_id)
            tracker.set_tags({"checkpoint_dir": str(out)}, run_id=run_id)
            tracker.log_artifact(recipe_path, run_id=run_id)
    return result
