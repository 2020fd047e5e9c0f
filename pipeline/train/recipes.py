"""Recipes: everything that decides a training run, one pydantic model per trainer, logged as MLflow params
and saved next to the model (`tracemill_recipe.json`).

Fields every trainer reads with the same meaning are declared once, in `RecipeBase`; their defaults are the
corpus spec's (`pipeline.config.TrainSettings`), so a recipe built in Python, by the CLI or by the checkpoint
asset starts from the same numbers. A field stays in a trainer's recipe where its meaning or default differs
there (a "batch" is sequences for SFT, pairs for DPO, completions for GRPO), so its help text can say why.
`from_settings` is the one mapping from a corpus spec's `train:` block to a recipe.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.config import TURN_TOKENS, TrainSettings
from pipeline.models import resolve_lora

DEVICES_HELP = ("Processes (one per GPU) that train together with DDP; > 1 starts them with `accelerate launch` "
                "(on CPU: gloo, for tests).")
_SPEC = TrainSettings.model_fields  # the spec's defaults are the recipes' defaults


class RecipeBase(BaseModel):
    """The settings every trainer's recipe shares with the same meaning and default."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(description="HF model id or local model directory to start from.")
    output_dir: str = Field(description="Where the tuned model + tokenizer are saved (plain HF layout, LoRA merged).")
    max_steps: int = Field(_SPEC["max_steps"].default, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(_SPEC["learning_rate"].default, gt=0, description="Peak learning rate (after warmup).")
    seed: int = Field(_SPEC["seed"].default, description="Seed for data order, sampling and adapter initialisation.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warmup.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name (cosine, linear, constant…).")
    logging_steps: int = Field(1, ge=1, description="Log loss / grad norm / lr (and rewards) every N steps.")
    run_name: str | None = Field(None, description="MLflow run name (default: <trainer>-<output dir name>).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA with bf16 when available.")
    devices: int = Field(_SPEC["devices"].default, ge=1, description=DEVICES_HELP)
    precision: Literal["auto", "fp32", "bf16"] = Field(_SPEC["precision"].default, description=_SPEC["precision"].description)

    @staticmethod
    def shared(settings: TrainSettings, base_model: str, output_dir: str) -> dict[str, Any]:
        """The fields a corpus spec's `train:` block sets the same way for every trainer."""
        return {"base_model": base_model, "output_dir": output_dir, "max_steps": settings.max_steps,
                "learning_rate": settings.learning_rate, "seed": settings.seed, "devices": settings.devices,
                "precision": settings.precision}


class LoraFields(BaseModel):
    """LoRA shape, shared by the preference and RL recipes (whether to use it is each recipe's `lora`)."""

    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora: bool | Literal["auto"] = Field(_SPEC["lora"].default, description="Train LoRA adapters (for DPO/KTO "
                                         "the reference is then the model with adapters off: no copy); auto: "
                                         "above 1B parameters (`pipeline.models.resolve_lora`).")


class SFTRecipe(RecipeBase, LoraFields):
    """Supervised fine-tuning on pre-tokenized rows."""

    per_device_batch_size: int = Field(_SPEC["batch_size"].default, ge=1,
                                       description="Sequences per device per micro-batch.")
    max_length: int = Field(_SPEC["max_length"].default, ge=2,
                            description="Sequences are truncated to this many tokens (keep start).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")

    @classmethod
    def from_settings(cls, settings: TrainSettings, base_model: str, output_dir: str) -> SFTRecipe:
        """`batch_size` is per optimizer step: each of the `devices` processes takes an equal share, in
        passes of `micro_batch_size` sequences (gradient accumulation)."""
        micro, passes = settings.accumulation()
        return cls(**cls.shared(settings, base_model, output_dir), max_length=settings.max_length, lora=settings.lora,
                   per_device_batch_size=micro, gradient_accumulation_steps=passes)


class PrefRecipe(RecipeBase, LoraFields):
    """Preference training (DPO pairs, KTO labelled singles); ideally from an SFT-trained model."""

    trainer: Literal["dpo", "kto"] = Field("dpo", description="dpo: chosen/rejected pairs; kto: labelled singles.")
    per_device_batch_size: int = Field(8, ge=1, description="Pairs (DPO) or examples (KTO, at least 2) per step.")
    beta: float = Field(_SPEC["beta"].default, gt=0, description="Strength of the pull towards the reference model.")
    max_length: int = Field(1024, ge=2, description="prompt+completion truncated to this many tokens (keep start).")
    desirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of label=True examples.")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO: loss weight of label=False examples.")

    @classmethod
    def from_settings(cls, settings: TrainSettings, base_model: str, output_dir: str,
                      trainer: Literal["dpo", "kto"] = "dpo") -> PrefRecipe:
        """KTO estimates its KL term from the other examples of a batch: at least 2 per device and pass."""
        micro, passes = settings.accumulation(max(2, settings.batch_size // settings.devices))
        if micro < 2:
            micro, passes = 2, max(1, passes // 2)
        return cls(**cls.shared(settings, base_model, output_dir), trainer=trainer, beta=settings.beta,
                   per_device_batch_size=micro, gradient_accumulation_steps=passes,
                   max_length=settings.max_length, lora=settings.lora)


class RLRecipe(RecipeBase, LoraFields):
    """GRPO on prompts with verifiable rewards; ideally from an SFT-trained model."""

    per_device_batch_size: int = Field(8, ge=1, description="Completions per step; a multiple of num_generations.")
    num_generations: int = Field(_SPEC["num_generations"].default, ge=2,
                                 description="Completions sampled per prompt (the group GRPO normalises in).")
    max_completion_length: int = Field(_SPEC["max_completion_length"].default, ge=1,
                                       description="Generated tokens per completion (one assistant turn).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature during rollouts.")
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference model; 0 (TRL's default) loads none.")
    reward_weights: list[float] | None = Field(
        None, description="Weights of the reward functions, in order: `rewards` then the environment's episode "
                          "reward; None = all 1.")
    environment: str | None = Field(None, description="`module:factory` of the environment each completion's "
                                    "episode is continued in and rewarded by (a corpus spec's `environment`).")
    environment_config: dict[str, Any] = Field(default_factory=dict, description="The factory's keyword arguments.")
    rewards: list[str] = Field(default_factory=list, description="TRL reward functions, 'module:function' "
                               "(a corpus spec's `rewards`).")
    episode_max_steps: int = Field(6, ge=1, description="Assistant turns an episode may take after the "
                                   "generated first turn, the policy continuing greedily.")
    episode_max_new_tokens: int = Field(TURN_TOKENS, ge=1, description="Generation budget of each continued turn (a "
                                        "spec's `online.max_new_tokens`): a tool call cut short does not parse.")
    timeout_s: float = Field(30.0, gt=0, description="Per-call limit on environment and reward code.")
    tools_in_prompt: bool = Field(False, description="Show the environment's tools in continued turns' prompts.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="No warmup: a few dozen steps of noisy rewards.")
    lr_scheduler_type: str = Field("constant", description="Constant: rewards, not a schedule, say when to stop.")

    @model_validator(mode="after")
    def _whole_groups(self) -> RLRecipe:
        if (self.per_device_batch_size * self.gradient_accumulation_steps * self.devices) % self.num_generations:
            raise ValueError("per_device_batch_size * gradient_accumulation_steps * devices must be a multiple of "
                             "num_generations (whole groups per generation batch)")
        n = len(self.rewards) + bool(self.environment)
        if self.reward_weights is not None and n and len(self.reward_weights) != n:
            raise ValueError(f"reward_weights needs {n} values: one per reward function, then the episode reward")
        return self

    @classmethod
    def from_settings(cls, settings: TrainSettings, base_model: str, output_dir: str) -> RLRecipe:
        """The batch is rounded down to whole groups of `num_generations` (at least one), then split."""
        n = settings.num_generations
        batch = max(n, settings.batch_size - settings.batch_size % n)
        share = max(1, batch // settings.devices)
        micro, passes = settings.accumulation(share) if share % min(settings.micro_batch_size or share, share) == 0 \
            else (share, 1)
        return cls(**cls.shared(settings, base_model, output_dir), num_generations=n, lora=settings.lora,
                   per_device_batch_size=micro, gradient_accumulation_steps=passes,
                   max_completion_length=settings.max_completion_length)


def recipe_params(recipe: BaseModel) -> dict[str, Any]:
    """A recipe as MLflow params; `device` is logged once the trainer is built, as the device it resolved to
    (`trainer_params`), and the recipe's wish is kept as `device_requested`. `lora` is logged as the decision
    (`auto` resolved for this base model: what the run did), and the wish as `lora_requested`."""
    dumped = recipe.model_dump()
    params = {**{k: v for k, v in dumped.items() if k != "device"}, "device_requested": dumped.get("device")}
    if "lora" in dumped:
        params |= {"lora": resolve_lora(dumped["lora"], dumped["base_model"]), "lora_requested": dumped["lora"]}
    return params
