"""Issue 16, item 1 (and item 2's run input): what a person sees after `make demo` in Dagster and MLflow.

One real materialization of the whole graph on a temp home (Parquet, Deeplake, TRL, MLflow sqlite),
shared by the tests below because training and evaluating is the slow part."""

import base64

import dagster as dg
import orjson
import pytest

from assets.definitions import build_assets, build_definitions
from assets.resources import local_resources
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, EvalSettings, OnlineEvalSettings, TracemillConfig, TrainSettings
from pipeline.demo.agents import populate
from pipeline.evaluate.plots import plots

DAY = "2026-11-16"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def graph(tmp_path_factory, tiny_model_dir):
    """(home, materialize result of checkpoint_sft + eval_sft) after ingest and one corpus version."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACEMILL_HOME", str(home))
        populate(Workspace.open("demo", home=home), days=[DAY], per_day=24, seed=1)
        spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft", eval_fraction=0.5,
                          train=TrainSettings(max_steps=2, batch_size=4, max_length=384),
                          eval=EvalSettings(max_examples=2, max_new_tokens=16),
                          online=OnlineEvalSettings(n_tasks=2, max_steps=2),
                          environment="pipeline.demo.environment:make_env")
        cfg = TracemillConfig(workspace="demo", base_model=str(tiny_model_dir), corpora=[spec])
        assets, checks = build_assets(cfg)
        res = dict(resources=local_resources("demo", home=str(home), base_model=cfg.base_model),
                   instance=dg.DagsterInstance.ephemeral())
        run = lambda sel, **kw: dg.materialize([*assets, *checks], selection=sel, **res, **kw)  # noqa: E731
        assert run(["raw_trajectories", "outcomes", "joined_trajectories"], partition_key=DAY).success
        assert run(["base_model", "curated_sft", "corpus_sft"]).success
        yield home, run(["checkpoint_sft", "eval_sft"])


def _md(result, key):
    ev = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key))
    return ev.materialization.metadata


def test_eval_metadata_shows_plots_as_images_and_the_answer_first(graph):
    home, result = graph
    md = _md(result, "eval_sft")
    assert list(md)[:4] == ["verdict", "gate_passed", "gate", "online_success_rate"]
    report = md["report"].value
    images = [part.split(")", 1)[0] for part in report.split("](data:image/png;base64,")[1:]]
    assert len(images) >= 3 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "![loss_curve](" in report and "![offline_deltas](" in report
    assert isinstance(md["mlflow_run"], dg.PathMetadataValue) and "artifacts" in md["mlflow_run"].value
    floats = [v.value for v in md.values() if isinstance(v, dg.FloatMetadataValue)]
    assert floats and all(round(f, 4) == f for f in floats)


def test_gate_check_says_first_checkpoint_with_numbers(graph):
    _, result = graph
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "not_worse_than_previous")
    meta = {k: v.value for k, v in check.metadata.items()}
    assert check.passed and meta["first_checkpoint"] is True and "first checkpoint" in meta["message"]
    assert isinstance(meta["value"], float) and meta["metric"] and isinstance(meta["margin"], float)


def test_every_asset_has_a_code_version():
    defs = build_definitions(TracemillConfig(corpora=[CorpusSpec(name="sft", target="deeplake://local/sft")]))
    graph = defs.resolve_asset_graph()
    missing = [k.to_user_string() for k in graph.get_all_asset_keys()
               if graph.get(k).is_materializable and not graph.get(k).code_version]
    assert not missing


def test_plots_draw_ci_on_the_delta_and_skip_empty_panels(tmp_path):
    tables = {"checkpoint": {"all": {"loss": 1.0, "acc": 0.5}, "empty": {}},
              "base": {"all": {"loss": 2.0, "acc": 0.25}, "empty": {}}}
    cmp = {"base": {"all": {"deltas": {"loss": -1.0, "acc": 0.25},
                            "ci": {"loss": [-1.0, -1.5, -0.5], "acc": [0.25, 0.0, 0.5]}}}}
    files = plots({"offline": {"tables": tables, "comparisons": cmp, "metrics": ["loss", "acc", "nothing"]}}, tmp_path)
    assert [f.name for f in files] == ["offline_slices.png", "offline_deltas.png"]


def test_mlflow_run_has_the_corpus_version_as_input_and_the_model_version_says_what_it_is(graph):
    from mlflow import MlflowClient

    home, result = graph
    run_id = _md(result, "checkpoint_sft")["mlflow_run_id"].value
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["deeplake://local/sft@v1"]
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["mlflow.data.context"] == "train" and tags["content_hash"].startswith("sha256:")
    assert tags["content_hash"].removeprefix("sha256:").startswith(inputs[0].dataset.digest)
    assert (home / "corpora").as_posix() in inputs[0].dataset.source
    version = client.get_model_version("tracemill-sft", "1")
    assert "deeplake://local/sft@v1" in version.description and "verdict" in version.description
    summary = orjson.loads(next((home / "checkpoints" / "sft").glob("*/tracemill_train.json")).read_bytes())
    model = client.get_logged_model(summary["model_id"])
    assert any(m.key == "eval_success_rate" for m in model.metrics or [])


def test_sft_logs_an_eval_loss_curve_on_the_eval_split(graph):
    from mlflow import MlflowClient

    home, result = graph
    run_id = _md(result, "checkpoint_sft")["mlflow_run_id"].value
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    history = client.get_metric_history(run_id, "eval_loss")
    during = {m.step for m in history if 0 < m.step}  # the eval stage adds the last point at the final step
    assert len(during) >= 2 and all(m.value > 0 for m in history) and 0 not in {m.step for m in history}


def test_rollouts_are_traces_on_the_training_run_with_plots_apart_and_counts_as_tags(graph):
    """The eval stage logs to the run that trained the checkpoint (`sft-<version>-<recipe>`): its Traces tab
    lists the rollouts, its Artifacts tab has one folder per kind of plot, its charts hold no counts."""
    from mlflow import MlflowClient

    from pipeline.tracking import is_count

    home, result = graph
    run_id = _md(result, "checkpoint_sft")["mlflow_run_id"].value
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    run = client.get_run(run_id)
    summary = orjson.loads(next((home / "checkpoints" / "sft").glob("*/tracemill_train.json")).read_bytes())
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=run_id)
    assert len(traces) == 2 == _md(result, "eval_sft")["mlflow_traces"].value  # online.n_tasks held-out tasks
    for found in traces:
        trace = client.get_trace(found.info.trace_id)
        assert trace.info.trace_metadata["mlflow.sourceRun"] == run_id
        assert trace.info.trace_metadata["mlflow.modelId"] == summary["model_id"]
        assert trace.info.tags["corpus"] == "deeplake://local/sft@v1" and trace.info.tags["task_id"]
        assert {a.name for a in trace.info.assessments} == {"reward", "success", "task"}
        assert any(s.span_type == "CHAT_MODEL" and s.outputs for s in trace.data.spans)

    plots = {a.path for d in ("online", "offline", "loss") for a in client.list_artifacts(run_id, f"plots/{d}")}
    assert {"plots/online/slices.png", "plots/offline/offline_slices.png", "plots/loss/loss_curve.png"} <= plots
    assert not [a.path for a in client.list_artifacts(run_id, "online_eval") if a.path.endswith(".png")]
    assert not [k for k in run.data.metrics if is_count(k)] and {"loss", "eval_loss"} <= set(run.data.metrics)
    assert int(run.data.tags["eval_n_rows"]) > 0 and int(run.data.tags["online_n_tasks"]) == 2
    assert client.get_logged_model(summary["model_id"]).name == "tracemill-sft-v1"


def test_run_link_is_a_url_for_a_tracking_server():
    from pipeline.tracking import MlflowTracker

    tracker = MlflowTracker("http://127.0.0.1:5000/", "tracemill")
    tracker._experiment_id = "7"  # what the server would answer; the link itself needs no request
    assert tracker.run_link("abc") == ("url", "http://127.0.0.1:5000/#/experiments/7/runs/abc")
