"""Project configuration: the workspace, the base model and the corpus specs, from `tracemill.yaml`.

Where things run (profiles, environment variables, their precedence) is `pipeline.settings`.

Adding a corpus is configuration, not code: every spec here becomes a curated → corpus →
checkpoint → eval chain of Dagster assets through one factory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.schema import format_validation_error
from pipeline.settings import Profile, current_settings, environment, read_yaml


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Cfg):
    max_steps: int = Field(200, ge=1, description="Optimizer steps per training run.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (cosine schedule).")
    batch_size: int = Field(16, ge=1, description="Sequences per optimizer step.")
    max_length: int = Field(512, ge=16, description="Longest tokenized conversation kept.")
    seed: int = Field(0, description="Seed for data order and initialisation.")
    beta: float = Field(0.1, gt=0, description="DPO/KTO: strength of the pull towards the reference model.")
    lora: bool | Literal["auto"] = Field("auto", description="Train LoRA adapters (merged into the saved "
                                         "checkpoint); auto: only for base models above 1B parameters.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 (fp16 without it) on a GPU, "
                                                      "fp32 on a CPU; bf16 also on a CPU with bfloat16 instructions "
                                                      "(AVX512-BF16/AMX: about 2x faster for SmolLM2 here).")
    micro_batch_size: int | None = Field(None, ge=1, description="Sequences per forward pass on one device; "
                                         "batch_size / devices is reached by gradient accumulation (None: one pass).")
    num_generations: int = Field(4, ge=2, description="GRPO: completions sampled per prompt.")
    max_completion_length: int = Field(48, ge=4, description="GRPO: tokens generated per completion.")
    devices: int = Field(1, ge=1, description="GPUs (processes, DDP) per training run; > 1 starts them with "
                                              "`accelerate launch`. batch_size stays per optimizer step, split "
                                              "across devices; the checkpoint asset requests this many GPUs.")

    @model_validator(mode="after")
    def _split_batch(self) -> TrainSettings:
        if self.batch_size % self.devices:
            raise ValueError(f"batch_size ({self.batch_size}, sequences per optimizer step) must be a multiple "
                             f"of devices ({self.devices}): each device takes an equal share")
        share = self.batch_size // self.devices
        if self.micro_batch_size is not None and share % min(self.micro_batch_size, share):
            raise ValueError(f"train.micro_batch_size ({self.micro_batch_size}) must divide batch_size / devices "
                             f"({share}): set it to a divisor of {share}")
        return self

    def accumulation(self, per_device: int | None = None) -> tuple[int, int]:
        """(sequences per device per pass, passes per optimizer step): `batch_size` stays sequences per
        optimizer step on any device; a smaller `micro_batch_size` trades passes for memory."""
        share = per_device if per_device is not None else self.batch_size // self.devices
        micro = min(self.micro_batch_size or share, share)
        return micro, share // micro


class EvalSettings(_Cfg):
    max_examples: int = Field(24, ge=1, description="Eval conversations used for generation metrics; for dpo/kto, "
                              "the pairs (rows) whose log-probabilities are compared.")
    max_new_tokens: int = Field(48, ge=1, description="Generation budget per assistant turn.")
    query: str = Field("SELECT * WHERE \"split\" = 'eval'", description="TQL slice of the corpus to evaluate on.")
    slices: dict[str, str] = Field(default_factory=dict, description="More named TQL slices of the same corpus "
                                   "version, e.g. {long: \"SELECT * WHERE \\\"split\\\" = 'eval' AND n_tokens > 220\"}.")


# New tokens a generated turn may spend by default (online eval, GRPO's continued turns). A turn cut short does
# not parse when it holds a tool call, and a real model's call with its arguments is easily 50-70 tokens.
TURN_TOKENS = 128


class OnlineEvalSettings(_Cfg):
    """Online evaluation runs only for a spec with an `environment`."""

    n_tasks: int = Field(30, ge=0, description="Held-out tasks of the environment the checkpoint acts on (0: off).")
    max_steps: int = Field(8, ge=1, description="Assistant turns allowed per task.")
    max_new_tokens: int = Field(TURN_TOKENS, ge=1, description="Generation budget per assistant turn. A turn that "
                                "reaches it is cut (counted in the report's `cut_turn_rate`): a tool call cut short "
                                "does not parse, so keep room for the longest call.")
    seed: int = Field(1000, description="Seed of the held-out tasks (never the training seed).")
    capture_to: str | None = Field(None, description="Workspace the rollouts are captured into (tagged with the "
                                   "checkpoint and environment); none by default, never implicitly the source.")
    timeout_s: float = Field(30.0, gt=0, description="Per-call limit on environment and reward code.")
    trace_limit: int = Field(30, ge=0, description="Rollouts of the checkpoint logged as MLflow traces on its "
                             "training run (its Traces tab), in task order (0: none).")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "capture" in data:
            raise ValueError("online.capture was replaced by online.capture_to: <workspace> (rollouts are no "
                             "longer written into the source workspace by default)")
        return data


ONLINE_METRICS = ("success_rate", "mean_reward", "tool_call_error_rate", "mean_steps", "invalid_output_rate")
LOWER_IS_BETTER = ("loss", "perplexity", "tool_call_error_rate", "mean_steps", "invalid_output_rate")
# The gate's metric when a spec names none: online success with an environment, else the offline metric
# every checkpoint of that format has (rl without an environment has no offline metric: no gate).
DEFAULT_OFFLINE_GATE = {"sft": "loss", "dpo": "preference_accuracy", "kto": "preference_accuracy", "rl": None}


class GateSettings(_Cfg):
    metric: str | None = Field(None, description="Metric the gate compares: an online one (success_rate, "
                               "mean_reward …; needs an environment) or an offline one (loss, "
                               "tool_args_schema_valid_rate, final_answer_accuracy, preference_accuracy …). "
                               "Default: success_rate with an environment, else loss (sft) / "
                               "preference_accuracy (dpo, kto).")
    margin: float = Field(0.1, ge=0, description="How much worse than the previous checkpoint is tolerated.")


class WaitPolicy(_Cfg):
    coverage: float = Field(0.0, ge=0, le=1, description="Share of trajectories that must have outcomes.")
    max: str = Field("0s", description="Snapshot anyway after this long (e.g. 6h).")


class CorpusSpec(_Cfg):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$", description="Asset suffix: curated_<name>, corpus_<name>…")
    format: Literal["sft", "dpo", "kto", "rl"] = "sft"
    filter: str = Field("", description="Filter expression over joined columns, e.g. `reward > 0`.")
    target: str = Field(description="Deeplake corpus, e.g. deeplake://local/sft.")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="Share of task ids held out as eval split.")
    tools_in_prompt: bool = Field(True, description="Render tool definitions into every sequence "
                                  "(off for a tiny model in a fixed world: saves ~250 tokens a row).")
    redact: bool = Field(True, description="Redact PII and secrets before anything reaches the corpus.")
    wait: WaitPolicy = Field(default_factory=WaitPolicy)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    online: OnlineEvalSettings = Field(default_factory=OnlineEvalSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    init_from: str = Field("", description="Start training from this corpus's latest checkpoint "
                                           "(e.g. DPO/RL after SFT) instead of the base model.")
    retrain: Literal["nightly", "on_new_version"] = Field(
        "nightly", description="When the checkpoint and eval follow a new corpus version: with the nightly "
        "retrain schedule (default), or by themselves as soon as a version lands (e.g. after late outcomes).")
    environment: str | None = Field(None, description="Where online eval and GRPO act: 'package.module:factory' "
                                    "(see pipeline.environment). None: offline evaluation only.")
    environment_config: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the "
                                               "environment factory.")
    rewards: list[str] = Field(default_factory=list, description="TRL reward functions ('module:function'; "
                               "'tracemill.rewards:valid_tool_call' for a built-in) GRPO trains on and online "
                               "eval reports, next to the environment's own trajectory reward.")
    heldout: Literal["eval", "drop"] = Field("eval", description="Where trajectories of the environment's held-out "
                                             "tasks go when curated: the eval split, or nowhere. Never train.")

    @property
    def gate_metric(self) -> str | None:
        """The metric the gate compares (see GateSettings.metric)."""
        if self.gate.metric:
            return self.gate.metric
        return "success_rate" if self.environment else DEFAULT_OFFLINE_GATE[self.format]

    @property
    def online_on(self) -> bool:
        return bool(self.environment) and self.online.n_tasks > 0

    @model_validator(mode="after")
    def _needs_environment(self) -> CorpusSpec:
        if self.environment:
            return self
        if self.gate.metric in ONLINE_METRICS:
            raise ValueError(f"gate.metric: {self.gate.metric} needs an environment (set environment: "
                             "package.module:factory, or gate on an offline metric such as loss)")
        if self.online.capture_to:
            raise ValueError("online.capture_to needs an environment: without one there are no rollouts to capture")
        if self.environment_config:
            raise ValueError("environment_config needs an environment: name its factory in environment:")
        return self

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not (v.startswith("deeplake://") or "://" in v or v.startswith("/")):
            raise ValueError(f"target {v!r} must look like deeplake://org/name (or a file://, s3:// URL)")
        return v


def _default_profiles() -> dict[str, Profile]:
    return {"local": Profile()}


class TracemillConfig(_Cfg):
    workspace: str = Field("demo", description="Workspace the pipeline reads.")
    partitions_start: str = Field("2026-11-01", description="First day partition (YYYY-MM-DD).")
    base_model: str = Field("tiny", description="HF model id or path; 'tiny' builds a small local model.")
    corpora: list[CorpusSpec] = Field(default_factory=list)
    profiles: dict[str, Profile] = Field(default_factory=_default_profiles, description="Named deployment "
                                         "profiles (local, team, k8s); TRACEMILL_PROFILE picks one (default local).")

    def profile(self, name: str | None = None) -> tuple[str, Profile]:
        """The active profile (`name`, else `$TRACEMILL_PROFILE`, else `local`) with environment variables
        (TRACEMILL_DATA_ROOT, TRACEMILL_CORPUS_ROOT, MLFLOW_TRACKING_URI, …) overriding its fields, so one
        machine can point a profile elsewhere without editing the file. Resolved by `pipeline.settings`
        from this config's profile table, so the Dagster definitions and the CLI cannot disagree."""
        settings = current_settings(profiles=self.profiles, profile=name)
        return settings.profile, settings.as_profile()

    @model_validator(mode="after")
    def _links(self) -> TracemillConfig:
        names = [c.name for c in self.corpora]
        if len(set(names)) != len(names):
            raise ValueError(f"corpora: names must be unique, got {names}")
        for c in self.corpora:
            if c.init_from and c.init_from not in names:
                raise ValueError(f"corpora.{c.name}.init_from: no corpus named {c.init_from!r}; have {names}")
        return self

    def corpus(self, name: str) -> CorpusSpec:
        for spec in self.corpora:
            if spec.name == name:
                return spec
        raise KeyError(f"no corpus named {name!r}; configured: {[c.name for c in self.corpora]}")


DEFAULT = TracemillConfig(corpora=[CorpusSpec(name="sft", format="sft", filter="reward > 0",
                                              target="deeplake://local/sft")])


def config_path() -> Path | None:
    """The config file: `$TRACEMILL_CONFIG`, else ./tracemill.yaml when it exists (see pipeline.settings)."""
    return environment().config_path()


def load_config(path: str | os.PathLike | None = None) -> TracemillConfig:
    """Load and validate the config; errors name the file, the field path and what is wrong."""
    p = Path(path) if path else config_path()
    if p is None:
        return DEFAULT
    try:
        return TracemillConfig.model_validate(read_yaml(p))
    except ValidationError as exc:
        raise ValueError(f"{p}: invalid config: {format_validation_error(exc)}") from None
