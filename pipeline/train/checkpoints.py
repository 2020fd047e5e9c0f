"""Finished checkpoints of a corpus: the typed summary each training leaves in `tracemill_train.json`, its
registration as an MLflow model version, and which checkpoint a corpus has promoted.

`CheckpointInfo` is what the training stage returns and what the evaluation stage reads back. The file
keeps the keys it always had (older checkpoints, `make demo` output and tests read it), so the model
maps one field to one key; it also reads as a mapping of those keys for code that holds the raw JSON.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.logs import event, get_logger

log = get_logger("train")
SUMMARY_FILE = "tracemill_train.json"
LATEST_FILE = "LATEST"
# keys that summaries written by older versions may lack (checkpoints outlive the code that wrote them)
_LEGACY_DEFAULTS: dict[str, Any] = {"format": "sft", "losses": [], "first_loss": float("nan"), "base_model": "",
                                    "train_rows": 0, "size_mb": 0.0, "mlflow_run_id": None}


@dataclass(frozen=True)
class Registration:
    """Where the registry put a checkpoint (`models:/tracemill-<corpus>/<version>`), or why it refused."""

    registered_model: str | None = None
    model_version: int | None = None
    model_id: str | None = None
    model_uri: str | None = None
    registration_error: str | None = None


@dataclass(frozen=True)
class CheckpointInfo(Mapping[str, Any]):
    """One finished training: where it is, what it trained on and from, how it went, how it was registered.
    `reused` says the same inputs found this checkpoint instead of training again (not stored in the file)."""

    checkpoint_dir: str
    corpus_ref: str
    format: str
    steps: int
    final_loss: float
    first_loss: float
    losses: list[float]
    tokens_per_second: float
    train_seconds: float
    mlflow_run_id: str | None
    base_model: str
    train_rows: int
    size_mb: float
    finished_at: float
    registration: Registration = Registration()
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        """The file's keys: registration fields flat, and only those the registry gave (no nulls)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("registration",
                                                                                                    "reused")}
        return out | {k: v for k, v in dataclasses.asdict(self.registration).items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], reused: bool = False) -> CheckpointInfo:
        """A summary as written by `to_json`; keys it does not know (newer code) are ignored, keys older code
        did not write get neutral values."""
        data = {**_LEGACY_DEFAULTS, **data}
        names = {f.name for f in dataclasses.fields(Registration)}
        own = {f.name for f in dataclasses.fields(cls)} - {"registration", "reused"}
        return cls(**{k: v for k, v in data.items() if k in own}, reused=reused,
                   registration=Registration(**{k: v for k, v in data.items() if k in names}))

    @classmethod
    def read(cls, path: Path, reused: bool = False) -> CheckpointInfo:
        return cls.from_json(orjson.loads(path.read_bytes()), reused)

    def write(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))

    # a read-only mapping of the file's keys (plus `reused`), for code that handles the raw summaries
    def _flat(self) -> dict[str, Any]:
        return self.to_json() | {"reused": self.reused}

    def __getitem__(self, key: str) -> Any:
        return self._flat()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())


def finished_checkpoints(checkpoints: Path) -> list[CheckpointInfo]:
    """Summaries of finished trainings under a corpus's checkpoint folder, oldest first."""
    return sorted((CheckpointInfo.read(p) for p in checkpoints.glob(f"*/{SUMMARY_FILE}")),
                  key=lambda c: c.finished_at)


def promoted_checkpoint(checkpoints: Path) -> str | None:
    """The checkpoint that passed its gate most recently (what downstream consumers should use)."""
    latest = checkpoints / LATEST_FILE
    return latest.read_text().strip() if latest.exists() else None


def promote(checkpoints: Path, checkpoint_dir: Path) -> None:
    """Make a checkpoint the corpus's promoted one (the eval gate passed)."""
    (checkpoints / LATEST_FILE).write_text(str(checkpoint_dir))


def registered_name(corpus: str) -> str:
    """The MLflow registered model that collects every checkpoint trained on one corpus."""
    return f"tracemill-{corpus}"


def logged_model_name(corpus: str, version: str = "") -> str:
    """The logged model of one checkpoint: `tracemill-<corpus>-<version>` (MLflow forbids `/ : . %` in it)."""
    name = f"{registered_name(corpus)}-{version}" if version else registered_name(corpus)
    return "".join("-" if c in '/:.%"\'' else c for c in name)


def register(tracker: Any, run_id: str, checkpoint_dir: Path, corpus: str, tags: dict[str, str]) -> Registration:
    """Register a trained checkpoint as the next version of `tracemill-<corpus>`, or say why the registry
    refused (`registration_error`): the training it follows must not be lost."""
    try:
        version = str(tags.get("corpus", "")).rpartition("@")[2]  # <target>@vN → the logged model tracemill-<corpus>-vN
        return Registration(**tracker.register_checkpoint(run_id, checkpoint_dir, registered_name(corpus), tags=tags,
                                                          model_name=logged_model_name(corpus, version)))
    except Exception as exc:  # noqa: BLE001 - an hour of training must not be lost to the registry
        error = f"{type(exc).__name__}: {exc}"[:500]
        event(log, "model registration failed", logging.WARNING, corpus=corpus, checkpoint=str(checkpoint_dir),
              mlflow_run_id=run_id, error=error)
        return Registration(registration_error=error)
