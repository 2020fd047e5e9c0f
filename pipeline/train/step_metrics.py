"""What a training run logs per step: loss and grad norm for the result, and every numeric Trainer
log for MLflow, plus two figures the Trainer does not give: tokens/s over each logging window and the
padding fraction of the batches the model actually saw. Shared by the SFT, DPO/KTO and GRPO runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.progress import report


class PaddingMeter:
    """Wraps a trainer's data collator and counts real vs padded positions in every `*attention_mask`
    of the batches it builds, so each logged step can report the padding fraction of what the model
    actually saw (the loader's length grouping is what keeps it low)."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate, self.real, self.total = collate, 0, 0

    @classmethod
    def install(cls, trainer: Any) -> PaddingMeter:
        meter = cls(trainer.data_collator)
        trainer.data_collator = meter
        return meter

    def __call__(self, features: list[Any]) -> Any:
        batch = self.collate(features)
        for key, value in batch.items() if isinstance(batch, Mapping) else ():  # GRPO passes rows through
            if key.endswith("attention_mask") and hasattr(value, "numel"):
                self.real, self.total = self.real + int(value.sum()), self.total + value.numel()
        return batch

    def take(self) -> float | None:
        """Padding fraction since the last call (None when no masked batch was built: packing, GRPO)."""
        frac = 1.0 - self.real / self.total if self.total else None
        self.real = self.total = 0
        return frac


def step_logger_for(tracker: Any, run_id: str | None, sink: dict[str, list[float]]):
    """Collects per-step loss/grad_norm for the result and forwards every numeric log to MLflow
    (buffered, so a sqlite store is not written once per step), adding per logged step the tokens/s
    over the window since the previous log and, once `meter` is set, the batches' padding fraction."""
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        def __init__(self) -> None:
            self.buffer: list[tuple[dict[str, float], int]] = []
            self.meter: PaddingMeter | None = None
            self.window = (time.perf_counter(), 0.0)  # (when, tokens seen) at the previous log

        def on_train_begin(self, args, state, control, **kwargs):
            self.window = (time.perf_counter(), 0.0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if "loss" in logs:
                sink["loss"].append(logs["loss"])
                report(state.global_step, state.max_steps, logs["loss"])
            if "grad_norm" in logs:
                sink["grad_norm"].append(logs["grad_norm"])
            if "num_tokens" in logs:
                sink["num_tokens"] = [logs["num_tokens"]]
                now, (then, seen) = time.perf_counter(), self.window
                if now > then and logs["num_tokens"] >= seen:
                    logs["tokens_per_second"] = (logs["num_tokens"] - seen) / (now - then)
                self.window = (now, logs["num_tokens"])
            padding = self.meter.take() if self.meter is not None and "loss" in logs else None
            if padding is not None:
                logs["padding_fraction"] = padding
            if tracker is not None and run_id and logs:
                self.buffer.append((logs, state.global_step))
                if len(self.buffer) >= 50:
                    self.flush()

        def on_train_end(self, args, state, control, **kwargs):
            self.flush()

        def flush(self) -> None:
            for logs, step in self.buffer:
                tracker.log_metrics(logs, step=step, run_id=run_id)
            self.buffer.clear()

    return StepLogger()
