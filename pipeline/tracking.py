"""A small MLflow wrapper: one tracker object, explicit run ids, runs always ended.

Why not `mlflow.start_run` / dagster-mlflow: the fluent API keeps a process-global active run (wrong
under threads and long-lived Dagster processes) and the Dagster resource leaves runs RUNNING when a
step fails. Here every call names its run through an `MlflowClient`, and `start_run` ends the run
FINISHED or FAILED whatever happens. `mlflow` is imported lazily: importing it costs 2-3 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.settings import current_settings, default_tracking_uri

MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values
_BATCH = 100  # params per log_batch call (MLflow's limit); metrics allow 1000
# Counts, not curves: how many rows, tasks, tokens, errors, parameters a run saw. As metrics they fill the
# run's charts with panels nobody reads as a trend; `log_metrics` writes them as run tags instead.
COUNT_NAMES = frozenset({"errors", "tokens", "total_flos", "epoch", "parameters", "step"})
_COUNT_PREFIXES = ("n_", "num_")
_COUNT_SUFFIXES = ("_rows", "_count", "_examples", "_pairs")
_SCOPES = ("eval_", "online_", "base_online_", "train_")


def is_count(key: str) -> bool:
    """`n_tasks`, `eval_n_rows`, `num_tokens`, `online_errors`, `train_rows`, `total_flos`…: a count (or a
    progress counter), not something whose curve says how training or a model is doing."""
    name = key.rsplit("/", 1)[-1]
    for scope in _SCOPES:
        name = name.removeprefix(scope)
    return name in COUNT_NAMES or name.startswith(_COUNT_PREFIXES) or key.endswith(_COUNT_SUFFIXES)


def _tag_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def local_tracking_uri(home: str | Path) -> str:
    """The sqlite store under a tracemill home (the built-in default of `pipeline.settings`)."""
    return default_tracking_uri(home)


def with_db_driver(uri: str) -> str:
    """`postgresql://…` → `postgresql+psycopg2://…` unless psycopg 3 is installed. SQLAlchemy 2.1 maps
    the bare scheme to psycopg 3, while the team profile installs psycopg2 (dagster-postgres needs it),
    so a tracking URI copied from a Postgres console would otherwise fail with `No module named psycopg`."""
    if uri.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + uri.removeprefix("postgresql://")
    return uri


@functools.cache
def code_version() -> dict[str, str]:
    """The git commit of the tracemill code this process runs, and whether that checkout had
    uncommitted changes, so every run can be traced to its code ("unknown" outside a git checkout,
    e.g. an installed wheel). Cached: it cannot change while the process runs."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no")))}


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts become dotted keys; values are strings capped at MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


@dataclass
class TrackedRun:
    """The run a `start_run` block logs to."""

    run_id: str
    experiment_id: str
    name: str


class MlflowTracker:
    """Tracks runs in one experiment. `tracking_uri=None` means the resolved setting for `home`
    (`$MLFLOW_TRACKING_URI`, else the active profile's, else the sqlite DB under the home); a sqlite
    store keeps its artifacts beside it (`<home>/mlflow/artifacts`)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "tracemill",
                 artifact_root: str | Path | None = None, home: str | Path | None = None):
        if tracking_uri is None:
            tracking_uri = current_settings(home=home).tracking_uri
        if artifact_root is None and tracking_uri.startswith("sqlite:///"):
            artifact_root = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
        self.tracking_uri = with_db_driver(tracking_uri)
        self.experiment = experiment
        self.artifact_root = str(artifact_root) if artifact_root is not None else None
        self._client: Any = None
        self._experiment_id: str | None = None
        self._active: list[TrackedRun] = []

    # -- setup --------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self.ensure_db()
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def ensure_db(self) -> None:
        """Create the sqlite DB (schema migrations) under a file lock. Two processes creating a fresh
        DB at once crash in MLflow, so this runs once up front; later calls are a no-op."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return
        db = Path(self.tracking_uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (db.exists() and db.stat().st_size > 0 and db.with_suffix(".ready").exists()):
                    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

                    root = self.artifact_root or str(db.parent / "artifacts")
                    SqlAlchemyStore(self.tracking_uri, Path(root).resolve().as_uri())
                    db.with_suffix(".ready").touch()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = Path(self.artifact_root).resolve().as_uri() if self.artifact_root else None
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
                except MlflowException:  # created concurrently by another process
                    self._experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    # -- runs ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def start_run(self, name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """A run that ends FINISHED when the block exits normally and FAILED when it raises."""
        code = code_version()
        all_tags = {"host": os.uname().nodename, "mlflow.source.git.commit": code["git_commit"],
                    **{k: str(v) for k, v in (tags or {}).items()}}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        tracked = TrackedRun(run.info.run_id, self.experiment_id, name)
        self._active.append(tracked)
        status = "FAILED"
        try:
            self.log_params({**code, **(params or {})}, run_id=tracked.run_id)
            yield tracked
            status = "FINISHED"
        finally:
            self._active.remove(tracked)
            self.client.set_terminated(tracked.run_id, status)

    def _run_id(self, run_id: str | None) -> str:
        if run_id:
            return run_id
        if not self._active:
            raise RuntimeError("no active run: log inside `with tracker.start_run(...)` or pass run_id")
        return self._active[-1].run_id

    def log_params(self, params: Mapping[str, Any], run_id: str | None = None) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self._run_id(run_id), params=items[i:i + _BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, run_id: str | None = None) -> None:
        """Values that are not numbers are skipped rather than failing a training run; counts (`is_count`)
        go to the run's tags (the latest value), not its charts."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        items, tags = [], []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if is_count(key):
                tags.append(RunTag(key, _tag_value(number)))
            else:
                items.append(Metric(key, number, now, step or 0))
        if tags:
            self.client.log_batch(self._run_id(run_id), tags=tags)
        for i in range(0, len(items), 1000):
            self.client.log_batch(self._run_id(run_id), metrics=items[i:i + 1000])

    def log_metrics_to_run(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Add metrics to a finished run (e.g. eval results to the run that trained the checkpoint)."""
        self.log_metrics(metrics, step=step, run_id=run_id)

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self._run_id(run_id), tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
        self.client.log_artifacts(self._run_id(run_id), str(local_dir), artifact_path)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
        self.client.log_artifact(self._run_id(run_id), str(local_path), artifact_path)

    # -- model registry ---------------------------------------------------------------------------
    def register_checkpoint(self, run_id: str, checkpoint_dir: str | Path, name: str,
                            tags: Mapping[str, Any] | None = None, model_name: str | None = None) -> dict[str, Any]:
        """Log a saved HF model directory as the run's model and register it as a new version of `name`.
        MLflow's transformers flavor cannot read transformers 5 checkpoints (its task lookup breaks), so
        this uses MLflow 3's flavor-neutral logged model: the directory's files as the model's artifacts
        (`mlflow artifacts download -u models:/<name>/<version>` gives back a `from_pretrained` folder). The
        logged model is called `model_name` (e.g. `tracemill-sft-v3`: the corpus and its version), so the
        experiment's Models tab says what each one was trained on."""
        from mlflow.exceptions import MlflowException

        tags = {k: str(v) for k, v in (tags or {}).items()}
        model = self.client.create_logged_model(self.experiment_id, name=model_name or name, source_run_id=run_id,
                                                tags=tags, model_type="hf-transformers-checkpoint")
        try:
            self.client.log_model_artifacts(model.model_id, str(checkpoint_dir))
        except Exception:
            self.client.finalize_logged_model(model.model_id, "FAILED")
            raise
        self.client.finalize_logged_model(model.model_id, "READY")
        try:
            self.client.create_registered_model(name, description="tracemill checkpoints trained on this corpus")
        except MlflowException:  # exists already (or created concurrently)
            pass
        version = self.client.create_model_version(name, source=model.artifact_location, run_id=run_id,
                                                   tags=tags, model_id=model.model_id)
        self.set_tags({"registered_model": f"{name}/{version.version}"}, run_id=run_id)
        return {"registered_model": name, "model_version": int(version.version), "model_id": model.model_id,
                "model_uri": f"models:/{name}/{version.version}"}

    def promote(self, name: str, version: int, alias: str = "champion") -> None:
        """Point `models:/<name>@<alias>` at a version; the eval gate calls it once a checkpoint passed (MLflow
        reserves `latest` for the newest version, gated or not, hence `champion`)."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def get_run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    def run_link(self, run_id: str) -> tuple[str, str]:
        """("url", the run's page) when the tracking server speaks HTTP, else ("path", the run's artifact
        folder): a person clicks the first in Dagster and opens the second with `mlflow ui` beside it."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return "url", f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return "path", self.client.get_run(run_id).info.artifact_uri.removeprefix("file://")

    def log_corpus_input(self, run_id: str, name: str, url: str, content_hash: str, context: str = "train") -> None:
        """The corpus version as the run's input dataset (the run page's "Datasets used"): `name` is
        `<target>@<version>`, the source the Deeplake URL, the digest the content hash. MLflow keeps a
        36-character digest, so the full hash also rides along as an input tag."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        try:
            source = resolve_dataset_source(url)  # file:// and s3:// have MLflow sources of their own
        except Exception:  # noqa: BLE001  (al://, mem:// … have none: keep the URL itself as the source)
            source = HTTPDatasetSource(url)
        digest = content_hash.removeprefix("sha256:")[:36]
        entity = MetaDataset(source, name=name, digest=digest)._to_mlflow_entity()
        tags = [InputTag("mlflow.data.context", context), InputTag("content_hash", content_hash)]
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags)])

    def describe_model_version(self, run_id: str, name: str, version: int, model_id: str | None,
                               metrics: Mapping[str, float], description: str, step: int = 0) -> None:
        """Eval metrics on the registered version's logged model (MLflow 3 shows a model's metrics on
        its version page) and a description that says what it is: corpus, version, verdict."""
        import time as _time

        from mlflow.entities import Metric

        now = int(_time.time() * 1000)
        rows = [Metric(k, float(v), now, step, model_id=model_id, run_id=run_id) for k, v in metrics.items()
                if not is_count(k)]
        if rows:
            self.client.log_batch(run_id, metrics=rows)
        self.client.update_model_version(name, str(version), description=description)
