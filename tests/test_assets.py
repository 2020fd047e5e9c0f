"""The Dagster graph, materialized for real on a temp home: Parquet, Deeplake, TRL and MLflow."""

import dagster as dg
import orjson
import pytest
from transformers import AutoModelForCausalLM

from assets.definitions import build_assets, build_definitions
from assets.resources import local_resources
from pipeline.capture.landing import read_landed
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, EvalSettings, OnlineEvalSettings, TracemillConfig, TrainSettings
from pipeline.corpus.store import list_versions, open_corpus, resolve_corpus_url
from pipeline.demo.agents import deliver_late, populate

DAYS = ["2026-11-16", "2026-11-17"]
SLICES = {"careful": "SELECT * WHERE \"split\" = 'eval' AND agent = 'careful'",
          "nobody": "SELECT * WHERE \"split\" = 'eval' AND agent = 'nobody'",
          "all_eval": "SELECT * WHERE \"split\" = 'eval' AND n_tokens > 0"}


def _config(base_model: str) -> TracemillConfig:
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft", eval_fraction=0.25,
                      train=TrainSettings(max_steps=4, batch_size=4, max_length=384),
                      eval=EvalSettings(max_examples=3, max_new_tokens=24, slices=SLICES),
                      online=OnlineEvalSettings(n_tasks=3, max_steps=3, capture_to="demo"),
                      environment="pipeline.demo.environment:make_env")
    return TracemillConfig(workspace="demo", base_model=base_model, corpora=[spec])


@pytest.fixture
def world(home):
    ws = Workspace.open("demo", home=home)
    stats = populate(ws, days=DAYS, per_day=16, seed=1)
    return ws, stats


def _materialize(cfg, home, select, partition_key=None, instance=None):
    assets, checks = build_assets(cfg)
    return dg.materialize([*assets, *checks], selection=select, partition_key=partition_key,
                          resources=local_resources(cfg.workspace, home=str(home), base_model=cfg.base_model),
                          instance=instance)


def _md(result, key):
    ev = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key))
    return {k: getattr(v, "value", v) for k, v in ev.materialization.metadata.items()}


def test_ingest_assets_quarantine_and_check(world, home, tiny_model_dir):
    ws, stats = world
    cfg = _config(str(tiny_model_dir))
    res = _materialize(cfg, home, ["raw_trajectories", "outcomes", "joined_trajectories"], partition_key=DAYS[0])
    assert res.success
    raw = _md(res, "raw_trajectories")
    assert raw["dagster/row_count"] == 16 and raw["quarantined"] == stats.bad_records == 2
    assert "| trajectory_id |" in raw["preview"]
    checks = res.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["quarantine_rate"] and checks[0].passed
    joined = _md(res, "joined_trajectories")
    assert joined["dagster/row_count"] == 16 and 0 < joined["outcome_coverage"] < 1  # some rewards held back
    assert ws.joined_path(DAYS[0]).exists() and not ws.joined_path(DAYS[1]).exists()


def test_full_graph_versions_trains_and_evaluates(world, home, tiny_model_dir, monkeypatch):
    ws, stats = world
    cfg = _config(str(tiny_model_dir))
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        assert _materialize(cfg, home, ["raw_trajectories", "outcomes", "joined_trajectories"], day, instance).success
    corpus_sel = ["base_model", "curated_sft", "corpus_sft"]
    first = _materialize(cfg, home, corpus_sel, instance=instance)
    v1 = _md(first, "corpus_sft")
    assert v1["version"] == "v1" and v1["new_version"] and v1["dagster/row_count"] > 0
    assert first.get_asset_check_evaluations()[0].passed  # blocking corpus check

    # late rewards arrive: the affected partitions re-materialize and the corpus gets a new version
    assert deliver_late(ws, stats) > 0
    for day in DAYS:
        _materialize(cfg, home, ["outcomes", "joined_trajectories"], day, instance)
    v2 = _md(_materialize(cfg, home, corpus_sel, instance=instance), "corpus_sft")
    assert v2["version"] == "v2" and v2["dagster/row_count"] > v1["dagster/row_count"] and v2["parent"] == "v1"
    # nothing changed → no new version
    again = _md(_materialize(cfg, home, corpus_sel, instance=instance), "corpus_sft")
    assert again["version"] == "v2" and not again["new_version"]

    url = resolve_corpus_url("deeplake://local/sft", f"file://{home / 'corpora'}")
    assert [v["version"] for v in list_versions(url)] == ["v1", "v2"]
    assert len(open_corpus(f"{url}@v1")) == v1["dagster/row_count"]

    trained = _materialize(cfg, home, ["checkpoint_sft", "eval_sft"], instance=instance)
    ck, ev = _md(trained, "checkpoint_sft"), _md(trained, "eval_sft")
    assert ck["steps"] == 4 and ck["corpus_version"].endswith("@v2") and ck["mlflow_run_id"]
    assert ck["final_loss"] == ck["final_loss"]  # finite, not NaN
    AutoModelForCausalLM.from_pretrained(ck["checkpoint"])  # reloads as a plain HF model
    assert ev["corpus_version"] == ck["corpus_version"] and "split" in ev["query"]
    assert ev["loss"] > 0 and 0 <= ev["tool_call_accuracy"] <= 1 and 0 <= ev["tool_args_schema_valid_rate"] <= 1
    assert 0 <= ev["online_success_rate"] <= 1 and "base_online_success_rate" in ev
    v2rows = open_corpus(f"{url}@v2").to_polars()
    careful = v2rows.filter((v2rows["split"] == "eval") & (v2rows["agent"] == "careful")).height
    assert ev["slices"]["careful"]["n_rows"] == careful and ev["slices"]["nobody"]["n_rows"] == 0
    # offline comparison with the base model measured on the same version and queries, with a paired CI
    report = ev["report"]
    assert "### Offline metrics per slice vs base and previous" in report
    offline_rows = [line for line in report.splitlines() if line.startswith("| offline | eval |")]
    assert offline_rows and "–" not in offline_rows[0].split("|")[4] and "not tested" not in offline_rows[0]
    assert ev["slices"]["all_eval"]["n_rows"] == (v2rows["split"] == "eval").sum() > 0
    assert ev["slices"]["careful"]["version"] == "v2" and ev["slices"]["careful"]["query"] == SLICES["careful"]
    assert "Offline metrics per slice" in ev["report"]
    assert "| all |" in ev["report"] or "all" in ev["report"]
    assert ev["gate_passed"] and trained.get_asset_check_evaluations()[0].passed  # first checkpoint: nothing to beat
    assert (home / "checkpoints" / "sft" / "LATEST").read_text() == ck["checkpoint"]
    captured = [line.record for line in read_landed(ws.landing, "trajectory")
                if line.record.get("agent", {}).get("name", "").startswith("ckpt:")]
    assert len(captured) == 3 and captured[0]["metadata"]["eval_tag"] == "sft@v2"  # online rollouts land in the workspace
    summary = orjson.loads((home / "checkpoints" / "sft").glob("*/tracemill_train.json").__next__().read_bytes())
    assert summary["mlflow_run_id"] == ck["mlflow_run_id"]
    # the checkpoint is an MLflow model, registered as tracemill-sft and promoted to @champion by the gate
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    assert ck["model_uri"] == "models:/tracemill-sft/1"
    latest = client.get_model_version_by_alias("tracemill-sft", "champion")
    assert str(latest.version) == "1" and latest.run_id == ck["mlflow_run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")  # as the README says
    files = download_artifacts(artifact_uri="models:/tracemill-sft@champion", dst_path=str(home / "dl"))
    AutoModelForCausalLM.from_pretrained(files)  # the registered files are a loadable HF model folder

    # same corpus version and recipe: the checkpoint is reused, not retrained
    ck2 = _md(_materialize(cfg, home, ["checkpoint_sft"], instance=instance), "checkpoint_sft")
    assert ck2["reused"] and ck2["checkpoint"] == ck["checkpoint"]


def test_definitions_load_with_default_config():
    defs = build_definitions(TracemillConfig(corpora=[CorpusSpec(name="sft", target="deeplake://local/sft")]))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_trajectories", "outcomes", "joined_trajectories", "base_model", "curated_sft", "corpus_sft",
            "checkpoint_sft", "eval_sft"} <= keys
    assert defs.resolve_job_def("ingest_daily").partitions_def is not None


def test_factory_builds_preference_and_rl_corpora(world, home, tiny_model_dir):
    """Adding a corpus is configuration: a DPO and an RL spec get their own curated/corpus assets."""
    specs = [CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft"),
             CorpusSpec(name="dpo", format="dpo", target="deeplake://local/dpo", init_from="sft"),
             CorpusSpec(name="rl", format="rl", target="deeplake://local/rl", init_from="sft")]
    cfg = TracemillConfig(workspace="demo", base_model=str(tiny_model_dir), corpora=specs)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        _materialize(cfg, home, ["raw_trajectories", "outcomes", "joined_trajectories"], day, instance)
    res = _materialize(cfg, home, ["base_model", "curated_dpo", "corpus_dpo", "curated_rl", "corpus_rl"], instance=instance)
    dpo, rl = _md(res, "corpus_dpo"), _md(res, "corpus_rl")
    assert dpo["version"] == "v1" and dpo["dagster/row_count"] > 0 and dpo["lineage"]["format"] == "dpo"
    assert rl["version"] == "v1" and rl["dagster/row_count"] > 0
    assert all(c.passed for c in res.get_asset_check_evaluations())
    pairs = open_corpus(resolve_corpus_url("deeplake://local/dpo", f"file://{home / 'corpora'}")).to_polars()
    assert (pairs["chosen_id"] != pairs["rejected_id"]).all()
    by_outcome = pairs.filter(pairs["source"] == "outcome")
    assert by_outcome.height > 0 and (by_outcome["chosen_reward"] > by_outcome["rejected_reward"]).all()
    assert set(pairs["source"]) <= {"outcome", "preference"}
    graph = build_definitions(cfg).resolve_asset_graph()
    deps = {k.to_user_string() for k in graph.get(dg.AssetKey("checkpoint_dpo")).parent_keys}
    assert "checkpoint_sft" in deps  # DPO starts from the SFT checkpoint: visible in the lineage
