"""The `k8s` profile, as far as it runs without a cluster: the profile alone switches every job to
dagster-k8s's pod-per-step executor, and the Kubernetes Job that dagster-k8s builds for a training
step (from the op tags, with its own code) asks for the GPUs the corpus spec trains on."""

from dagster_k8s import k8s_job_executor
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

from assets.definitions import build_definitions
from assets.resources import executor_for
from pipeline.config import CorpusSpec, Profile, TracemillConfig, TrainSettings


def _config(devices: int) -> TracemillConfig:
    specs = [CorpusSpec(name="sft", target="deeplake://org/sft", train=TrainSettings(devices=devices)),
             CorpusSpec(name="dpo", format="dpo", target="deeplake://org/dpo", init_from="sft")]
    return TracemillConfig(workspace="demo", corpora=specs,
                           profiles={"k8s": Profile(data_root="s3://b/data", corpus_root="s3://b/corpora",
                                                    executor="k8s", max_concurrent=8)})


def _pod_job(tags: dict[str, str], image: str = "registry.internal/tracemill:1") -> object:
    """What the k8s step handler submits for a step with these tags (no API server is contacted)."""
    config = DagsterK8sJobConfig(job_image=image, dagster_home="/opt/dagster/dagster_home",
                                 instance_config_map="dagster-instance", image_pull_policy="IfNotPresent")
    return construct_dagster_k8s_job(config, args=["dagster", "api", "execute_step"], job_name="tracemill-step",
                                     user_defined_k8s_config=get_user_defined_k8s_config(tags))


def test_k8s_profile_runs_every_job_pod_per_step_with_gpu_limits(monkeypatch):
    monkeypatch.setenv("TRACEMILL_PROFILE", "k8s")
    defs = build_definitions(_config(devices=2))
    for name in ("ingest_daily", "corpus_refresh", "train_and_eval", "rejoin_daily"):
        assert defs.resolve_job_def(name).executor_def.name == k8s_job_executor.name, name

    job = defs.resolve_job_def("train_and_eval")
    sft = job.graph.node_named("checkpoint_sft").tags
    dpo = job.graph.node_named("checkpoint_dpo").tags
    sft_pod = _pod_job(sft).spec.template.spec
    assert sft_pod.containers[0].resources.limits == {"nvidia.com/gpu": "2"}  # train.devices: 2
    assert sft_pod.containers[0].image == "registry.internal/tracemill:1"
    assert _pod_job(dpo).spec.template.spec.containers[0].resources.limits == {"nvidia.com/gpu": "1"}
    # steps that do not train ask for no GPU
    snapshot = defs.resolve_job_def("corpus_refresh").graph.node_named("corpus_sft").tags
    assert _pod_job(snapshot).spec.template.spec.containers[0].resources.limits is None


def test_k8s_executor_takes_the_profile_concurrency():
    """dagster-k8s's own config schema accepts what the profile sets (a typo would fail here)."""
    resolved = executor_for(Profile(executor="k8s", max_concurrent=3)).apply_config_mapping({})
    assert resolved.success and resolved.value["config"]["max_concurrent"] == 3
