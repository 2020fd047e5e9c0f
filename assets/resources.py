"""Resources: where the data lives and where runs are tracked.

Their values come from `pipeline.settings` (flag > environment variable > active profile of
tracemill.yaml > built-in default), the same resolution the CLI uses, so `tracemill corpus list` and
the corpus_* assets see the same corpus root and `tracemill train` and checkpoint_* the same MLflow.
Local: everything under `$TRACEMILL_HOME` (default ./.tracemill): file:// Deeplake, sqlite MLflow.
Team/k8s: the same resources pointed at object storage and a tracking server by the active profile
(`TRACEMILL_PROFILE`; the older `TRACEMILL_ENV=production` is an alias of the team profile).
A resource field is a flag: set, it wins; empty, the built-in default under the home applies.
"""


from pathlib import Path

import dagster as dg

from pipeline.capture.workspace import Workspace, home_dir
from pipeline.models import resolve_model
from pipeline.settings import (
    Profile,
    as_root_url,
    current_settings,
    default_corpus_root,
    default_tracking_uri,
)


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
        return as_root_url(self.corpus_root) if self.corpus_root else default_corpus_root(self.home_path)

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

        uri = self.tracking_uri or default_tracking_uri(home)
        return MlflowTracker(uri, self.experiment, artifact_root=str(home / "mlflow" / "artifacts"))


def local_resources(workspace: str = "demo", home: str = "", base_model: str = "tiny") -> dict[str, object]:
    return {"tracemill": TracemillResource(home=home, workspace=workspace, base_model=base_model),
            "mlflow": MlflowResource()}


def profile_resources(workspace: str, base_model: str, profile: Profile) -> dict[str, object]:
    """Resources for a resolved profile (`TracemillConfig.profile()`: environment overrides applied)."""
    return {"tracemill": TracemillResource(workspace=workspace, base_model=base_model, data_root=profile.data_root,
                                           corpus_root=profile.corpus_root),
            "mlflow": MlflowResource(tracking_uri=profile.mlflow_tracking_uri)}


def resources_for_env(workspace: str, base_model: str, profile: Profile | None = None) -> dict[str, object]:
    """Resources for `profile`, else for the settings of this process (see `pipeline.settings`)."""
    return profile_resources(workspace, base_model, profile or current_settings().as_profile())


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
