"""The training stage around a run: every checkpoint becomes a registered MLflow model version, and a
registry that fails keeps the trained checkpoint (and says why) instead of throwing the run away."""

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config import CorpusSpec, TrainSettings
from pipeline.tracking import MlflowTracker
from pipeline.train.stage import train_corpus


class RegistryDown(MlflowTracker):
    """A real tracker whose model registry refuses (an old tracking server, a permissions problem)."""

    def register_checkpoint(self, *args, **kwargs):
        raise MlflowException("registry unavailable: 503 from the tracking server")


def _spec(steps: int) -> CorpusSpec:
    return CorpusSpec(name="sft", target="deeplake://org/sft",
                      train=TrainSettings(max_steps=steps, batch_size=2, max_length=384))


def test_checkpoints_register_and_survive_a_failing_registry(sft_corpus, tiny_model_dir, tmp_path):
    _, root = sft_corpus
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "stage-train", artifact_root=tmp_path / "artifacts")
    first = train_corpus(_spec(2), root, str(tiny_model_dir), tmp_path / "ck", tracker)
    assert first["model_uri"] == "models:/tracemill-sft/1" and not first["reused"]
    version = MlflowClient(tracking_uri=uri).get_model_version("tracemill-sft", "1")
    assert version.run_id == first["mlflow_run_id"] and version.tags["corpus"] == "deeplake://org/sft@v1"

    down = RegistryDown(uri, "stage-train", artifact_root=tmp_path / "artifacts")
    second = train_corpus(_spec(3), root, str(tiny_model_dir), tmp_path / "ck", down)
    assert second["steps"] == 3 and "model_uri" not in second
    assert second["registration_error"].startswith("MlflowException: registry unavailable")
    assert down.get_run(second["mlflow_run_id"]).info.status == "FINISHED"
    again = train_corpus(_spec(3), root, str(tiny_model_dir), tmp_path / "ck", down)
    assert again["reused"] and again["checkpoint_dir"] == second["checkpoint_dir"]  # not trained twice
