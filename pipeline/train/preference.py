"""Preference training (DPO, KTO) with TRL on tracemill's chat format, tracked in MLflow.

Why text, not pre-tokenized ids: TRL 1.16's DPO/KTO trainers always (re)tokenize `prompt` + completion
columns themselves, so the rows are handed over as *standard-format text* rendered by
`pipeline.chat_format`: the prompt ends with the assistant header, the completion is the rest of the
conversation (assistant bodies, `<|end|>`, tool turns). Our tokenizer adds no BOS/EOS of its own and every
completion already ends with `<|end|>` (= EOS), so TRL's "add EOS" step adds nothing, and because the prompt
ends on a special token, the prompt/completion split is exact.

Why a collator wrapper: TRL puts the loss on the *whole* completion, tool results included. In a multi-turn
completion those tokens are the environment's, not the policy's, so `ToolTurnMasking` zeroes them (and the
assistant headers) in `completion_mask`, which gives the same mask as `chat_format.render_segments`.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipeline.chat_format import ASSISTANT, END, render_prompt, render_segments
from pipeline.train.devices import is_main_process, load_causal_lm, settings_for, trainer_params
from pipeline.train.sft import RecipeBase, TrainResult, quiet_progress, recipe_params
from pipeline.train.step_metrics import PaddingMeter, step_logger_for


class LoraFields(BaseModel):
    """LoRA shape, shared by the preference and RL recipes (whether to use it is each recipe's `lora`)."""

    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")


class PrefRecipe(RecipeBase, LoraFields):
    """Everything that decides a preference run; logged as MLflow params and saved next to the model."""

    base_model: str = Field(description="HF model id or local model directory to start from (ideally SFT-trained).")
    output_dir: str = Field(description="Where the tuned model + tokenizer are saved (plain HF layout, LoRA merged).")
    trainer: Literal["dpo", "kto"] = Field("dpo", description="dpo: chosen/rejected pairs; kto: labelled singles.")
    max_steps: int = Field(100, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (LoRA wants ~10x a full fine-tune).")
    per_device_batch_size: int = Field(8, ge=1, description="Pairs (DPO) or examples (KTO, at least 2) per step.")
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    max_length: int = Field(1024, ge=2, description="prompt+completion truncated to this many tokens (keep start).")
    seed: int = Field(0, description="Seed for data order and initialisation of adapters.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warmup.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name.")
    logging_steps: int = Field(1, ge=1, description="Log loss / rewards / margins every N steps.")
    desirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of label=True examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of label=False examples.")
    lora: bool = Field(False, description="Train LoRA adapters (reference = adapters off, no model copy).")
    run_name: str | None = Field(None, description="MLflow run name (default: <trainer>-<output dir name>).")


# ---- rows → TRL text columns ---------------------------------------------------------------------
def _messages(value: Any) -> list[dict[str, Any]]:
    """Message lists arrive as JSON strings (corpus rows) or already decoded."""
    if isinstance(value, bytes | str):
        value = json.loads(value or "[]")
    return list(value or [])


def prompt_text(prompt: Any, tools: Any = None) -> str:
    """The prompt (tool list, system, user…) up to and including the assistant header."""
    return render_prompt(_messages(prompt), _messages(tools) or None)


def completion_text(completion: Any) -> str:
    """What follows the prompt's assistant header: the first assistant body, then any tool turns and
    later assistant turns. Raises ValueError when the completion does not start with an assistant turn."""
    segments = render_segments(_messages(completion))
    if len(segments) < 2 or segments[0][0] != ASSISTANT:
        raise ValueError("a completion must start with an assistant message")
    return "".join(text for text, _ in segments[1:])


def dpo_dataset(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, str]], int]:
    """`prompt/chosen/rejected` text rows; pairs that cannot be rendered or are identical are skipped."""
    out, skipped = [], 0
    for row in rows:
        try:
            item = {"prompt": prompt_text(row["prompt"], row.get("tools")),
                    "chosen": completion_text(row["chosen"]), "rejected": completion_text(row["rejected"])}
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if item["chosen"] == item["rejected"]:
            skipped += 1
            continue
        out.append(item)
    return out, skipped


def kto_dataset(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """`prompt/completion/label` text rows; rows that cannot be rendered are skipped."""
    out, skipped = [], 0
    for row in rows:
        try:
            out.append({"prompt": prompt_text(row["prompt"], row.get("tools")),
                        "completion": completion_text(row["completion"]), "label": bool(row["label"])})
        except (ValueError, KeyError, TypeError):
            skipped += 1
    return out, skipped


# ---- loss mask -----------------------------------------------------------------------------------
def assistant_only(input_ids: Any, completion_mask: Any, assistant_id: int, end_id: int) -> Any:
    """`completion_mask` restricted to assistant bodies (their `<|end|>` included). A completion starts inside
    a body; a token is the policy's when the last marker (header or end) before it is a header (or none)."""
    import torch

    inside = completion_mask.bool()
    is_hdr = (input_ids == assistant_id) & inside
    marker = is_hdr | ((input_ids == end_id) & inside)
    pos = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
    last = torch.where(marker, pos, torch.full_like(pos, -1)).cummax(dim=1).values
    prev = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], dim=1)  # last marker strictly before
    prev_is_hdr = torch.where(prev >= 0, is_hdr.gather(1, prev.clamp(min=0)), torch.ones_like(inside))
    return (inside & prev_is_hdr & ~is_hdr).to(completion_mask.dtype)


@dataclass
class ToolTurnMasking:
    """Wraps a TRL preference collator; drops tool-turn tokens from `completion_mask` (and `KL_completion_mask`)."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    assistant_id: int
    end_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        for prefix in ("", "KL_"):
            if f"{prefix}completion_mask" in batch:
                batch[f"{prefix}completion_mask"] = assistant_only(
                    batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"], self.assistant_id, self.end_id)
        return batch


def marker_ids(tokenizer: Any) -> tuple[int, int] | None:
    """(assistant header id, end id) when both are single tokens, i.e. the tokenizer speaks our format."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (ASSISTANT, END)]
    return (ids[0][0], ids[1][0]) if all(len(i) == 1 for i in ids) else None


# ---- running a TRL trainer -----------------------------------------------------------------------
def lora_config(r: int, alpha: int) -> Any:
    """LoRA on every linear layer but the LM head (TRL's DPO/KTO read `lm_head.weight` directly)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def common_args(recipe: Any) -> dict[str, Any]:
    """TrainingArguments shared by our TRL configs: no mid-run checkpoints, no reporters, device defaults."""
    return dict(
        output_dir=recipe.output_dir, max_steps=recipe.max_steps, learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.per_device_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, seed=recipe.seed, data_seed=recipe.seed,
        warmup_steps=recipe.warmup_ratio, lr_scheduler_type=recipe.lr_scheduler_type,
        max_grad_norm=recipe.max_grad_norm, logging_steps=recipe.logging_steps, save_strategy="no",
        eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        **settings_for(recipe.device).training_args())


def run_tracked(kind: str, recipe: Any, build: Callable[[list], Any], params: Mapping[str, Any],
                tracker: Any = None, run_tags: Mapping[str, str] | None = None,
                callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train what `build(callbacks)` returns inside an MLflow run, merge LoRA, save a plain HF model dir.
    In a launched group every rank trains; only the main process saves and talks to MLflow."""
    import transformers
    import trl
    from transformers import PrinterCallback

    main = is_main_process()
    tracker = tracker if main else None
    out = Path(recipe.output_dir)
    recipe_path = out / "tracemill_recipe.json"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(json.dumps(recipe.model_dump(), indent=2))
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
        trainer.remove_callback(PrinterCallback)
        if tracker is not None:
            tracker.log_params(trainer_params(trainer), run_id=run_id)
        start = time.perf_counter()
        state = trainer.train()
        seconds = time.perf_counter() - start
        model = trainer.model
        if main:
            if hasattr(model, "merge_and_unload"):  # a PeftModel: ship base + merged adapters as a plain model
                model = model.merge_and_unload()
            model.save_pretrained(str(out))
            trainer.processing_class.save_pretrained(str(out))
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


def load_policy(base_model: str, device: str = "auto") -> tuple[Any, Any]:
    """fp32 model (the trainer autocasts on GPU) with the device's attention kernel, and its tokenizer,
    with a pad token the model agrees on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_causal_lm(base_model, settings_for(device))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _build_pref(kind: str, data: list[dict[str, Any]], recipe: PrefRecipe) -> Callable[[list], Any]:
    def build(callbacks: list) -> Any:
        import datasets
        from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
        from trl.trainer.dpo_trainer import DataCollatorForPreference
        from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

        model, tokenizer = load_policy(recipe.base_model, recipe.device)
        args = {**common_args(recipe), "max_length": recipe.max_length, "beta": recipe.beta}
        if kind == "dpo":
            config = DPOConfig(**args)
            collator: Any = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=recipe.max_length,
                                                      truncation_mode=config.truncation_mode)
        else:
            config = KTOConfig(**args, desirable_weight=recipe.desirable_weight,
                               undesirable_weight=recipe.undesirable_weight)
            collator = DataCollatorForUnpairedPreference(pad_token_id=tokenizer.pad_token_id,
                                                         max_length=recipe.max_length)
        if (markers := marker_ids(tokenizer)) is not None:
            collator = ToolTurnMasking(collator, *markers)
        trainer_cls = DPOTrainer if kind == "dpo" else KTOTrainer
        # ref_model=None: with LoRA the reference is the model with adapters disabled; without, TRL loads a copy.
        return trainer_cls(model=model, ref_model=None, args=config, data_collator=collator,
                           train_dataset=datasets.Dataset.from_list(data), processing_class=tokenizer,
                           callbacks=callbacks,
                           peft_config=lora_config(recipe.lora_r, recipe.lora_alpha) if recipe.lora else None)

    return build


def _train(kind: Literal["dpo", "kto"], rows: Iterable[Mapping[str, Any]], recipe: PrefRecipe, tracker: Any,
           run_tags: Mapping[str, str] | None) -> TrainResult:
    if recipe.trainer != kind:
        raise ValueError(f"recipe.trainer is {recipe.trainer!r}, not {kind!r}")
    if kind == "kto" and recipe.per_device_batch_size < 2:
        raise ValueError("KTO estimates its KL term from other examples in the batch: per_device_batch_size >= 2")
    data, skipped = dpo_dataset(rows) if kind == "dpo" else kto_dataset(rows)
    if not data:
        raise ValueError(f"no usable {kind} row ({skipped} skipped): nothing to train on")
    params: dict[str, Any] = {"train_rows": len(data), "skipped_rows": skipped}
    if kind == "kto":
        # KTO reads its data in order (its KL term pairs each prompt with a neighbour's completion), and corpus
        # rows come grouped by task: shuffle once, or batches would hold one prompt and a biased KL estimate.
        random.Random(recipe.seed).shuffle(data)
        params["desirable_rows"] = sum(d["label"] for d in data)
    from pipeline.train import launch

    if launch.should_launch(recipe.devices):
        return launch.launch(kind, {"data": data, "params": params}, recipe, tracker, run_tags)
    return fit_pref(kind, data, params, recipe, tracker, run_tags)


def fit_pref(kind: Literal["dpo", "kto"], data: list[dict[str, Any]], params: Mapping[str, Any], recipe: PrefRecipe,
             tracker: Any = None, run_tags: Mapping[str, str] | None = None,
             callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train on prepared text rows in this process (one rank of a launched group, or alone)."""
    return run_tracked(kind, recipe, _build_pref(kind, data, recipe), params, tracker, run_tags, callbacks)


def train_dpo(rows: Iterable[Mapping[str, Any]], recipe: PrefRecipe, tracker: Any = None,
              run_tags: Mapping[str, str] | None = None) -> TrainResult:
    """DPO on `prompt/chosen/rejected` rows (messages as JSON); saves a plain HF model to `recipe.output_dir`."""
    return _train("dpo", rows, recipe, tracker, run_tags)


def train_kto(rows: Iterable[Mapping[str, Any]], recipe: PrefRecipe, tracker: Any = None,
              run_tags: Mapping[str, str] | None = None) -> TrainResult:
    """KTO on `prompt/completion/label` rows (messages as JSON); saves a plain HF model to `recipe.output_dir`."""
    return _train("kto", rows, recipe, tracker, run_tags)


def train_pref(rows: Iterable[Mapping[str, Any]], recipe: PrefRecipe, tracker: Any = None,
               run_tags: Mapping[str, str] | None = None) -> TrainResult:
    """`train_dpo` or `train_kto`, as `recipe.trainer` says (for callers driven by a corpus spec)."""
    return _train(recipe.trainer, rows, recipe, tracker, run_tags)
