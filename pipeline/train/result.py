"""What a training run produced, whichever trainer ran it and however many processes it took.

A leaf module: the trainers return it, and `pipeline.train.launch` rebuilds it from rank 0's JSON, so it sits
below both (it used to live in `sft.py`, which made launch and sft import each other).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
