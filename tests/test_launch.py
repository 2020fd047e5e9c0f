"""Multi-process training for real: `accelerate launch` with 2 CPU processes (gloo) on the tiny model, fed
with prepared rows (what DPO/KTO/GRPO and `train_sft` hand over) or a streamed corpus (`train_sft_corpus`)."""

from __future__ import annotations

import math
import sys

import orjson
import pytest

from pipeline.train import launch
from pipeline.train.recipes import SFTRecipe
from pipeline.train.sft import train_sft, train_sft_corpus


@pytest.fixture
def tracker(tmp_path):
    from pipeline.tracking import MlflowTracker

    t = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "test-launch")
    t.ensure_db()
    return t


def test_should_launch_only_outside_a_group(monkeypatch):
    monkeypatch.delenv(launch.WORKER_ENV, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch.should_launch(2) and not launch.should_launch(1)
    monkeypatch.setenv("WORLD_SIZE", "2")  # already a rank (e.g. the user ran torchrun): train here
    assert not launch.should_launch(2)


def test_stream_echoes_forwards_progress_and_keeps_the_tail(tmp_path):
    from pipeline import progress

    script = "import sys\nfor i in range(60): print('line', i)\nprint('@@tracemill-progress 2 5 1.5')\nsys.exit(3)"
    seen, echoed = [], []
    token = progress._current.set(lambda *a: seen.append(a))
    try:
        code, tail = launch.stream([sys.executable, "-c", script], {}, tmp_path / "log", echoed.append)
    finally:
        progress._current.reset(token)
    assert code == 3 and seen == [(2, 5, 1.5)] and len(echoed) == 60
    assert tail == [f"line {i}" for i in range(20, 60)] and "progress" in (tmp_path / "log").read_text()


@pytest.mark.parametrize("source", ["rows", "corpus"])
def test_two_processes_train_one_checkpoint_and_one_mlflow_run(source, tiny_model_dir, sft_rows, sft_corpus, tracker,
                                                               tmp_path):
    """Both ranks train (DDP keeps their weights equal), rank 0 saves a loadable checkpoint and logs into the
    one MLflow run the parent opened; step reports reach the parent's progress bar."""
    from transformers import AutoModelForCausalLM

    from pipeline import progress

    recipe = SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "ckpt"), max_steps=3,
                       per_device_batch_size=2, learning_rate=3e-3, devices=2)
    seen = []
    token = progress._current.set(lambda done, total, loss: seen.append((done, total)))
    try:
        if source == "rows":
            res = train_sft(sft_rows, recipe, tracker=tracker, run_tags={"corpus": "test@v1"})
        else:
            res = train_sft_corpus(sft_corpus[0], recipe, root=sft_corpus[1], query="SELECT * WHERE \"split\" = 'train'",
                                   tracker=tracker, run_tags={"corpus": "test@v1"})
    finally:
        progress._current.reset(token)
    assert res.world_size == 2 and res.steps == 3 and len(res.losses) == 3 and res.train_rows == 8
    assert all(math.isfinite(v) for v in res.losses + res.grad_norms) and seen == [(1, 3), (2, 3), (3, 3)]
    info = orjson.loads((res.checkpoint_dir / "tracemill_launch.json").read_bytes())
    assert [(r["rank"], r["world_size"], r["steps"]) for r in info["ranks"]] == [(0, 2, 3), (1, 2, 3)]
    assert info["ranks"][0]["param_checksum"] == pytest.approx(info["ranks"][1]["param_checksum"], rel=1e-9)
    model = AutoModelForCausalLM.from_pretrained(res.checkpoint_dir)
    assert float(sum(p.double().sum() for p in model.parameters())) == pytest.approx(
        info["ranks"][0]["param_checksum"], rel=1e-6)  # the saved weights are the trained ones

    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [r.info.run_id for r in runs] == [res.mlflow_run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["corpus"] == "test@v1"
    assert run.data.tags["trainer"] == "sft" and run.info.run_name == "sft-ckpt"
    assert {k: run.data.params[k] for k in ("world_size", "device", "attn_implementation", "devices")} == {
        "world_size": "2", "device": "cpu", "attn_implementation": "sdpa", "devices": "2"}
    assert sorted(m.step for m in tracker.client.get_metric_history(res.mlflow_run_id, "loss")) == [1, 2, 3]


def test_a_failed_group_raises_with_its_log_tail_and_fails_the_run(tiny_model_dir, tracker, tmp_path):
    recipe = SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "ckpt"), max_steps=1, devices=2)
    with pytest.raises(launch.LaunchError, match="unknown training kind 'nope'") as err:
        launch.launch("nope", {}, recipe, tracker, echo=lambda line: None)
    assert "rank" in str(err.value) and "exit 1" in str(err.value) and (tmp_path / "ckpt" / "tracemill_launch.log").exists()
    (run,) = tracker.client.search_runs([tracker.experiment_id])
    assert run.info.status == "FAILED"


def test_devices_reach_the_checkpoint_asset_and_split_the_batch():
    """`train.devices` asks Kubernetes for that many GPUs; batch_size stays per optimizer step, so it must
    split evenly over the devices."""
    import dagster as dg

    from assets.definitions import build_assets
    from pipeline.config import CorpusSpec, TracemillConfig, TrainSettings

    cfg = TracemillConfig(corpora=[CorpusSpec(name="sft", target="deeplake://local/sft",
                                              train=TrainSettings(devices=2, batch_size=16))])
    assets, _ = build_assets(cfg)
    ckpt = next(a for a in assets if dg.AssetKey("checkpoint_sft") in a.keys)
    limits = orjson.loads(ckpt.op.tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "2"}
    with pytest.raises(ValueError, match="multiple of devices"):
        TrainSettings(devices=2, batch_size=3)
