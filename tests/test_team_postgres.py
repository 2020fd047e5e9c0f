"""The `team` profile's databases, for real: a Postgres 16 server (pgserver's wheel, on a unix socket
in a temp folder) holds Dagster's run/event storage, loaded from the documented
`docs/dagster.team.yaml`, and the MLflow tracking store. The assets materialize, train and register a
model against it, and a fresh instance and plain SQL read the results back."""

import shutil
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from assets.definitions import build_assets, build_definitions
from assets.resources import resources_for_env
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec, Profile, TracemillConfig, TrainSettings
from pipeline.demo.agents import deliver_late, populate

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-11-16"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    for db in ("dagster", "mlflow"):
        server.psql(f"CREATE DATABASE {db};")
    yield server
    server.cleanup()


def sql(url: str, query: str, *args) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def test_team_profile_keeps_dagster_and_mlflow_in_postgres(postgres, home, tmp_path, tiny_model_dir, monkeypatch):
    dagster_url, mlflow_url = postgres.get_uri("dagster"), postgres.get_uri("mlflow")  # postgresql://…?host=<socket dir>
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "docs" / "dagster.team.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_url.replace("postgresql://", "postgresql+psycopg2://"))

    profile = Profile(data_root=str(tmp_path / "data"), mlflow_tracking_uri=mlflow_url, executor="in_process")
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://team/sft", eval_fraction=0.25,
                      train=TrainSettings(max_steps=3, batch_size=4, max_length=384))
    cfg = TracemillConfig(workspace="demo", base_model=str(tiny_model_dir), corpora=[spec], profiles={"team": profile})
    monkeypatch.setenv("TRACEMILL_PROFILE", "team")
    ws = Workspace.open("demo", data_root=profile.data_root)
    stats = populate(ws, days=[DAY], per_day=16, seed=1)

    assets, checks = build_assets(cfg)
    resources = resources_for_env(cfg.workspace, cfg.base_model, cfg.profile()[1])
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"

        def run(select, partition=None):
            res = dg.materialize([*assets, *checks], selection=select, partition_key=partition,
                                 resources=resources, instance=instance)
            assert res.success
            return res

        run(["raw_trajectories", "outcomes", "joined_trajectories"], DAY)
        trained = run(["base_model", "curated_sft", "corpus_sft", "checkpoint_sft"])
        ck = next(e.materialization.metadata for e in trained.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey("checkpoint_sft"))
        run_id = ck["mlflow_run_id"].value
        dagster_run_id = trained.run_id

        # the late-outcome sensor reads the same instance: a cursor, then exactly the touched day
        defs = build_definitions(cfg)
        sensor = defs.resolve_sensor_def("late_outcomes")
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        sensor(ctx)
        deliver_late(ws, stats)
        ctx = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, resources=resources)
        requests = list(sensor(ctx))
        assert [r.partition_key for r in requests if isinstance(r, dg.RunRequest)] == [DAY]

    # a fresh instance (a webserver or daemon process would be one) sees the same history
    with dg.DagsterInstance.get() as fresh:
        event = fresh.get_latest_materialization_event(dg.AssetKey("checkpoint_sft"))
        assert event is not None and event.run_id == dagster_run_id
        assert event.asset_materialization.metadata["mlflow_run_id"].value == run_id
        assert fresh.get_run_by_id(dagster_run_id).is_success
    rows = sql(dagster_url, "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                            "AND asset_key LIKE %s", '%raw_trajectories%')
    assert rows[0][0] == 1

    # MLflow's tables are in the second database: the run, its step metrics, the registered model
    status, tag = sql(mlflow_url, "SELECT r.status, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                                  "WHERE r.run_uuid = %s AND t.key = 'dagster_run_id'", run_id)[0]
    assert status == "FINISHED" and tag == dagster_run_id
    steps = sql(mlflow_url, "SELECT count(DISTINCT step) FROM metrics WHERE run_uuid = %s AND key = 'loss'", run_id)
    assert steps[0][0] == 3  # max_steps=3, a loss per step
    assert sql(mlflow_url, "SELECT name FROM registered_models") == [("tracemill-sft",)]
