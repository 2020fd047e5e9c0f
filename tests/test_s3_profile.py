"""The `team` profile's object storage, for real: an S3-compatible server (moto) on 127.0.0.1 holds
the landing area, the Parquet lake and a Deeplake corpus; capture, Dagster assets and `open_corpus`
all run against it. Nothing is mocked inside tracemill: boto, s3fs, polars and Deeplake talk HTTP."""

import logging
import sys

import boto3
import dagster as dg
import httpx
import pytest

from assets.definitions import build_assets, build_definitions
from assets.resources import executor_for, resources_for_env
from pipeline import storage
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, Profile, TracemillConfig
from pipeline.corpus.store import list_versions, open_corpus, resolve_corpus_url
from pipeline.demo.agents import deliver_late, populate
from pipeline.lake.ingest import ingest_trajectories
from pipeline.lake.late import scan_new_outcomes
from pipeline.server.auth import create_token
from tests.capture_helpers import ThreadServer

BUCKET = "tracemill-data"
DAY = "2026-11-16"


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch, home):
    """Standard AWS variables, as a team would set them; a fresh bucket per test."""
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint,
                       "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _team(tiny_model_dir) -> TracemillConfig:
    profile = Profile(data_root=f"s3://{BUCKET}/tracemill", corpus_root=f"s3://{BUCKET}/corpora",
                      executor="in_process")
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://team/sft", eval_fraction=0.25)
    return TracemillConfig(workspace="demo", base_model=str(tiny_model_dir), corpora=[spec],
                           profiles={"team": profile})


def test_team_profile_runs_landing_lake_and_corpus_on_s3(s3, home, tiny_model_dir, monkeypatch):
    cfg = _team(tiny_model_dir)
    monkeypatch.setenv("TRACEMILL_PROFILE", "team")
    _, profile = cfg.profile()
    ws = Workspace.open("demo", data_root=profile.data_root)
    assert storage.is_remote(ws.root) and str(ws.root) == f"s3://{BUCKET}/tracemill/demo"
    stats = populate(ws, days=[DAY], per_day=12, seed=3)  # SDK local mode, writing to S3
    landed = _keys(s3, "tracemill/demo/landing/trajectory/")
    assert landed and all(k.endswith(".ndjson") for k in landed)
    assert Workspace.list(data_root=profile.data_root) == ["demo"]
    assert not (home / "workspaces").exists()  # nothing went to the local disk

    assets, checks = build_assets(cfg)
    resources = resources_for_env(cfg.workspace, cfg.base_model, profile)
    instance = dg.DagsterInstance.ephemeral()

    def run(select, partition=None):
        res = dg.materialize([*assets, *checks], selection=select, partition_key=partition,
                             resources=resources, instance=instance)
        assert res.success
        return {e.asset_key.path[-1]: {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
                for e in res.get_asset_materialization_events()}

    md = run(["raw_trajectories", "outcomes", "joined_trajectories"], DAY)
    assert md["raw_trajectories"]["dagster/row_count"] == 12 and md["raw_trajectories"]["quarantined"] == 2
    lake_keys = _keys(s3, "tracemill/demo/lake/")
    assert f"tracemill/demo/lake/trajectories/{DAY}.parquet" in lake_keys
    assert f"tracemill/demo/lake/joined/{DAY}.parquet" in lake_keys
    assert _keys(s3, f"tracemill/demo/quarantine/trajectory/{DAY}.ndjson")

    md = run(["base_model", "curated_sft", "corpus_sft"])
    rows = md["corpus_sft"]["dagster/row_count"]
    assert md["corpus_sft"]["version"] == "v1" and rows > 0
    assert _keys(s3, "tracemill/demo/curated/sft.parquet")
    assert _keys(s3, "corpora/team/sft/")  # the Deeplake dataset's objects
    url = resolve_corpus_url("deeplake://team/sft", profile.corpus_root)
    assert url.startswith("s3://") and len(open_corpus(f"{url}@v1")) == rows

    # late outcomes land as new objects; the sensor's scan sees exactly that day; re-join → v2
    scan = scan_new_outcomes(ws, None)
    assert deliver_late(ws, stats) > 0
    later = scan_new_outcomes(ws, scan.cursor)
    assert later.days == [DAY] and later.new_outcomes > 0
    run(["outcomes", "joined_trajectories"], DAY)
    md = run(["base_model", "curated_sft", "corpus_sft"])
    assert md["corpus_sft"]["version"] == "v2" and md["corpus_sft"]["parent"] == "v1"  # the late rewards changed it
    assert [v["version"] for v in list_versions(url)] == ["v1", "v2"]
    assert len(open_corpus(f"{url}@v1")) == rows  # the old version is still exactly itself


def test_capture_server_lands_batches_as_objects(s3, home, monkeypatch):
    monkeypatch.setenv("TRACEMILL_DATA_ROOT", f"s3://{BUCKET}/tracemill")
    Workspace.create("live", home)
    token = create_token(home, "live", "writer")
    server = ThreadServer(home).start()
    try:
        batch = [{"trajectory_id": f"t{i}", "agent": "a", "started_at": f"{DAY}T10:00:00Z",
                  "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"hello {i}"}]}
                 for i in range(50)]
        resp = httpx.post(f"{server.url}/v1/workspaces/live/trajectories", json=batch,
                          headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == 50, resp.json()
    finally:
        server.stop()
    assert _keys(s3, f"tracemill/live/landing/trajectory/{DAY}/")  # acknowledged = stored in the bucket
    df, stats = ingest_trajectories(Workspace("live", home), DAY)
    assert df.height == 50 and stats.quarantined == 0
    assert sorted(df["trajectory_id"].to_list()) == sorted(f"t{i}" for i in range(50))


def test_profiles_select_executor_and_fail_clearly(monkeypatch, tiny_model_dir):
    cfg = _team(tiny_model_dir)
    assert executor_for(Profile(executor="in_process")) is dg.in_process_executor
    assert executor_for(Profile()) is None
    monkeypatch.setenv("TRACEMILL_PROFILE", "team")
    monkeypatch.setenv("TRACEMILL_CORPUS_ROOT", "s3://elsewhere/corpora")  # env beats the file
    name, profile = cfg.profile()
    assert name == "team" and profile.corpus_root == "s3://elsewhere/corpora"
    assert profile.data_root == f"s3://{BUCKET}/tracemill"
    defs = build_definitions(cfg)
    assert defs.resolve_job_def("ingest_daily").executor_def.name == "in_process"
    monkeypatch.setenv("TRACEMILL_PROFILE", "prod")
    with pytest.raises(ValueError, match="TRACEMILL_PROFILE='prod'.*defines \\['team'\\]"):
        cfg.profile()
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # as on an install without the k8s extra
    with pytest.raises(RuntimeError, match="needs the dagster-k8s package"):
        executor_for(Profile(executor="k8s"))


def test_sdk_cli_and_server_follow_the_selected_profile(tmp_path, monkeypatch, home):
    from pipeline.corpus.store import default_corpus_root

    cfg = tmp_path / "tracemill.yaml"
    cfg.write_text("profiles:\n  team: {data_root: 's3://b/data', corpus_root: 's3://b/corpora'}\n")
    monkeypatch.setenv("TRACEMILL_CONFIG", str(cfg))
    assert Workspace("w", home).root == home / "workspaces" / "w"  # no profile selected: local
    monkeypatch.setenv("TRACEMILL_PROFILE", "team")
    assert str(Workspace("w", home).root) == "s3://b/data/w" and default_corpus_root() == "s3://b/corpora"
    monkeypatch.setenv("TRACEMILL_DATA_ROOT", str(tmp_path / "elsewhere"))  # the variable wins
    assert Workspace("w", home).root == tmp_path / "elsewhere" / "w"
