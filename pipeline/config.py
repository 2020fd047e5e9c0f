"""Project configuration: the workspace, the base model and the corpus specs, from `tracemill.yaml`.

Adding a corpus is configuration, not code: every spec here becomes a curated → corpus →
checkpoint → eval chain of Dagster assets through one factory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.schema import format_validation_error


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSettings(_Cfg):
    max_steps: int = Field(200, ge=1, description="Optimizer steps per training run.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (cosine schedule).")
    batch_size: int = Field(16, ge=1, description="Sequences per optimizer step.")
    max_length: int = Field(512, ge=16, description="Longest tokenized conversation kept.")
    seed: int = Field(0, description="Seed for data order and initialisation.")


class EvalSettings(_Cfg):
    max_examples: int = Field(24, ge=1, description="Eval conversations used for generation metrics.")
    max_new_tokens: int = Field(48, ge=1, description="Generation budget per assistant turn.")
    query: str = Field("SELECT * WHERE \"split\" = 'eval'", description="TQL slice of the corpus to evaluate on.")


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

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not (v.startswith("deeplake://") or "://" in v or v.startswith("/")):
            raise ValueError(f"target {v!r} must look like deeplake://org/name (or a file://, s3:// URL)")
        return v


class TracemillConfig(_Cfg):
    workspace: str = Field("demo", description="Workspace the pipeline reads.")
    partitions_start: str = Field("2026-11-01", description="First day partition (YYYY-MM-DD).")
    base_model: str = Field("tiny", description="HF model id or path; 'tiny' builds a small local model.")
    corpora: list[CorpusSpec] = Field(default_factory=list)

    def corpus(self, name: str) -> CorpusSpec:
        for spec in self.corpora:
            if spec.name == name:
                return spec
        raise KeyError(f"no corpus named {name!r}; configured: {[c.name for c in self.corpora]}")


DEFAULT = TracemillConfig(corpora=[CorpusSpec(name="sft", format="sft", filter="reward > 0",
                                              target="deeplake://local/sft")])


def config_path() -> Path | None:
    env = os.environ.get("TRACEMILL_CONFIG")
    if env:
        return Path(env)
    here = Path("tracemill.yaml")
    return here if here.exists() else None


def load_config(path: str | os.PathLike | None = None) -> TracemillConfig:
    """Load and validate the config; errors name the file, the field path and what is wrong."""
    p = Path(path) if path else config_path()
    if p is None:
        return DEFAULT
    try:
        data = yaml.safe_load(p.read_text()) or {}
        return TracemillConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{p}: invalid config: {format_validation_error(exc)}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML: {exc}") from None
