"""Preference training (DPO, KTO) with TRL on the base model's own chat template, tracked in MLflow.

Rows become text columns (`pipeline.train.text_columns`: TRL tokenizes pairs itself), TRL's collator is
wrapped so tool turns carry no loss (`pipeline.train.tool_masking`), and the run is tracked like every other
(`pipeline.train.tracked_run`). `recipe.devices > 1` hands the prepared text rows to a launched group.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pipeline.train import launch
from pipeline.train.recipes import PrefRecipe
from pipeline.train.result import TrainResult
from pipeline.train.text_columns import dpo_dataset, kto_dataset
from pipeline.train.tool_masking import ToolTurnMasking, marker_ids
from pipeline.train.tracked_run import (
    common_args,
    load_policy,
    load_tokenizer,
    lora_config,
    run_tracked,
    use_lora,
)


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
                           peft_config=lora_config(recipe.lora_r, recipe.lora_alpha) if use_lora(recipe) else None)

    return build


def _train(kind: Literal["dpo", "kto"], rows: Iterable[Mapping[str, Any]], recipe: PrefRecipe, tracker: Any,
           run_tags: Mapping[str, str] | None) -> TrainResult:
    if recipe.trainer != kind:
        raise ValueError(f"recipe.trainer is {recipe.trainer!r}, not {kind!r}")
    if kind == "kto" and recipe.per_device_batch_size < 2:
        raise ValueError("KTO estimates its KL term from other examples in the batch: per_device_batch_size >= 2")
    rows = list(rows)
    make = dpo_dataset if kind == "dpo" else kto_dataset
    data, skipped = make(rows)  # validate before loading a tokenizer (tracemill's format renders anything)
    if data:
        data, skipped = make(rows, load_tokenizer(recipe.base_model))  # the model's own template
    if not data:
        raise ValueError(f"no usable {kind} row ({skipped} skipped): nothing to train on")
    params: dict[str, Any] = {"train_rows": len(data), "skipped_rows": skipped}
    if kind == "kto":
        # KTO reads its data in order (its KL term pairs each prompt with a neighbour's completion), and corpus
        # rows come grouped by task: shuffle once, or batches would hold one prompt and a biased KL estimate.
        random.Random(recipe.seed).shuffle(data)
        params["desirable_rows"] = sum(d["label"] for d in data)
    if launch.should_launch(recipe.devices):
        return launch.launch(kind, {"data": data, "params": params}, recipe, tracker, run_tags)
    return fit_pref(kind, data, params, recipe, tracker, run_tags)


def fit_pref(kind: Literal["dpo", "kto"], data: list[dict[str, Any]], params: Mapping[str, Any], recipe: PrefRecipe,
             tracker: Any = None, run_tags: Mapping[str, str] | None = None,
             callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train on prepared text rows in this process (one rank of a launched group, or alone)."""
    return run_tracked(kind, recipe, _build_pref(kind, data, recipe), params, tracker, run_tags, callbacks)


def fit_launched(payload: Mapping[str, Any], recipe: PrefRecipe, tracker: Any = None,
                 run_tags: Mapping[str, str] | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """One rank of a launched group: `payload` is the text rows and params `train_dpo`/`train_kto` prepared."""
    return fit_pref(recipe.trainer, payload["data"], payload["params"], recipe, tracker, run_tags, callbacks)


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
