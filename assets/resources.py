"""Resources: where the data lives and where runs are tracked, with a local and a production variant.

Local: everything under `$TRACEMILL_HOME` (default ./.tracemill): file:// Deeplake, sqlite MLflow.
Team/k8s: the same resources pointed at object storage and a tracking server by the active profile in
tracemill.yaml (`TRACEMILL_PROFILE`), or by env vars (`TRACEMILL_ENV=production`).
"""


import os
from pathlib import Path

import dagster as dg

from pipeline.capture.workspace import Workspace, home_dir
from pipeline.config import Profile
from pipeline.models import resolve_model


class TracemillResource(dg.ConfigurableResource):
    """The tracemill home and workspace the pipeline reads and writes."""

    home: str = ""
    workspace: str = "demo"
    data_root: str = ""
    corpus_root: str = ""
    base_model: str = "tiny"

    @property
    def home_path(self) -> Path:
        return home_dir(self.home or None)

    def open_workspace(self) -> Workspace:
        return Workspace.open(self.workspace, home=self.home_path, data_root=self.data_root or None)

    def corpus_root_url(self) -> str:
        return self.corpus_root or f"file://{self.home_path / 'corpora'}"

    def models_dir(self) -> Path:
        return self.home_path / "models"

    def checkpoints_root(self) -> Path:
        return self.home_path / "checkpoints"

    def checkpoints_dir(self, corpus: str) -> Path:
        return self.checkpoints_root() / corpus

    def base_model_path(self) -> str:
        return resolve_model(self.base_model, self.models_dir())


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking; an empty URI means the local sqlite DB under the tracemill home."""

    tracking_uri: str = ""
    experiment: str = "tracemill"

    def tracker(self, home: Path):
        from pipeline.tracking import MlflowTracker

        uri = self.tracking_uri or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        return MlflowTracker(uri, self.experiment, artifact_root=str(home / "mlflow" / "artifacts"))


def local_resources(workspace: str = "demo", home: str = "", base_model: str = "tiny") -> dict[str, object]:
    return {"tracemill": TracemillResource(home=home, workspace=workspace, base_model=base_model),
            "mlflow": MlflowResource()}


def production_resources(workspace: str, base_model: str) -> dict[str, object]:
    return {
        "tracemill": TracemillResource(home=dg.EnvVar("TRACEMILL_HOME"), workspace=workspace,
                                       corpus_root=dg.EnvVar("TRACEMILL_CORPUS_ROOT"), base_model=base_model),
        "mlflow": MlflowResource(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI")),
    }


def profile_resources(workspace: str, base_model: str, profile: Profile) -> dict[str, object]:
    """Resources for a profile of tracemill.yaml (see `pipeline.config.Profile`)."""
    return {"tracemill": TracemillResource(workspace=workspace, base_model=base_model, data_root=profile.data_root,
                                           corpus_root=profile.corpus_root),
            "mlflow": MlflowResource(tracking_uri=profile.mlflow_tracking_uri)}


def resources_for_env(workspace: str, base_model: str, profile: Profile | None = None) -> dict[str, object]:
    """`TRACEMILL_ENV=production` selects the env-var variant; else the active profile (local by default)."""
    if os.environ.get("TRACEMILL_ENV") == "production":
        return production_resources(workspace, base_model)
    if profile is not None:
        return profile_resources(workspace, base_model, profile)
    return local_resources(workspace, base_model=base_model)


def executor_for(profile: Profile) -> dg.ExecutorDefinition | None:
    """The step executor a profile asks for (None: Dagster's default, in-process or multiprocess)."""
    if profile.executor == "in_process":
        return dg.in_process_executor
    if profile.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": profile.max_concurrent})
    if profile.executor == "k8s":
        try:
            from dagster_k8s import k8s_job_executor  # type: ignore[import-not-found]
        except ImportError:
            raise RuntimeError("profile executor 'k8s' needs the dagster-k8s package: `pip install "
                               "'tracemill[k8s]'`, or pick executor: multiprocess") from None
        return k8s_job_executor.configured({"max_concurrent": profile.max_concurrent})
    return None
