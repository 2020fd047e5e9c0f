"""One settings resolution for everyone: under every profile (local, team, k8s, the TRACEMILL_ENV alias)
and with environment overrides, the real CLI and the real Dagster resources (as `assets.definitions`
builds them) see the same corpus root and the same MLflow tracking URI. Nothing is mocked: the CLI
runs as typer runs it, the resources come from `build_definitions`, and one end-to-end run snapshots
and trains from the terminal under the team profile and finds the result where the assets look."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from assets.definitions import build_definitions
from assets.resources import resources_for_env
from pipeline.cli.common import settings as cli_settings
from pipeline.cli.main import app
from pipeline.config import load_config
from pipeline.settings import Settings, current_settings


def _write_config(tmp_path) -> dict[str, dict[str, str]]:
    """A tracemill.yaml whose three profiles all point somewhere else (local folders, so the CLI can
    really open them; the k8s tracking server is only a URI)."""
    profiles = {
        "local": {},
        "team": {"data_root": str(tmp_path / "team-data"), "corpus_root": f"file://{tmp_path / 'team-corpora'}",
                 "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'team-mlflow' / 'mlflow.db'}"},
        "k8s": {"data_root": str(tmp_path / "k8s-data"), "corpus_root": str(tmp_path / "k8s-corpora"),
                "mlflow_tracking_uri": "http://mlflow.tracemill.svc:5000", "executor": "in_process"},
    }
    lines = ["workspace: demo", "corpora:", "  - {name: sft, target: 'deeplake://org/sft'}", "profiles:"]
    lines += [f"  {name}: {json.dumps(fields)}" for name, fields in profiles.items()]
    (tmp_path / "tracemill.yaml").write_text("\n".join(lines) + "\n")
    return profiles


CASES = {  # id: (environment, expected corpus root, expected tracking URI), paths relative to tmp_path / home
    "local": ({}, "file://{home}/corpora", "sqlite:///{home}/mlflow/mlflow.db"),
    "team": ({"TRACEMILL_PROFILE": "team"}, "file://{tmp}/team-corpora", "sqlite:///{tmp}/team-mlflow/mlflow.db"),
    "k8s": ({"TRACEMILL_PROFILE": "k8s"}, "file://{tmp}/k8s-corpora", "http://mlflow.tracemill.svc:5000"),
    "legacy-production": ({"TRACEMILL_ENV": "production"}, "file://{tmp}/team-corpora",
                          "sqlite:///{tmp}/team-mlflow/mlflow.db"),
    "team+env": ({"TRACEMILL_PROFILE": "team", "TRACEMILL_CORPUS_ROOT": "{tmp}/env-corpora",
                  "MLFLOW_TRACKING_URI": "http://mlflow.override:5000"},
                 "file://{tmp}/env-corpora", "http://mlflow.override:5000"),
    "local+env": ({"TRACEMILL_CORPUS_ROOT": "file://{tmp}/env-corpora/", "MLFLOW_TRACKING_URI": "sqlite:///{tmp}/x.db"},
                  "file://{tmp}/env-corpora", "sqlite:///{tmp}/x.db"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_and_dagster_resources_agree_under_every_profile(case, tmp_path, home, monkeypatch):
    _write_config(tmp_path)
    monkeypatch.setenv("TRACEMILL_CONFIG", str(tmp_path / "tracemill.yaml"))
    for var in ("TRACEMILL_PROFILE", "TRACEMILL_ENV", "TRACEMILL_CORPUS_ROOT", "MLFLOW_TRACKING_URI",
                "TRACEMILL_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    env, root, uri = CASES[case]
    fill = {"tmp": tmp_path.resolve(), "home": home.resolve()}
    for var, value in env.items():
        monkeypatch.setenv(var, value.format(**fill))
    root, uri = root.format(**fill), uri.format(**fill)

    # the Dagster side: the resources the Definitions object really carries
    cfg = load_config()
    defs = build_definitions(cfg)
    tracemill, mlflow = defs.resources["tracemill"], defs.resources["mlflow"]
    assert tracemill.corpus_root_url() == root
    assert mlflow.tracker(tracemill.home_path).tracking_uri == uri
    same = resources_for_env(cfg.workspace, cfg.base_model)  # no profile given: this process's settings
    assert same["tracemill"].corpus_root_url() == root

    # the CLI side: `corpus list` and `train` look for the corpus under the same root …
    runner = CliRunner()
    listed = runner.invoke(app, ["corpus", "list", "org/sft"])
    assert listed.exit_code == 1 and f"{root}/org/sft" in "".join(listed.output.split())  # rich may wrap
    trained = runner.invoke(app, ["train", "sft", "--corpus", "org/sft@v1"])
    assert trained.exit_code == 1 and f"{root}/org/sft" in "".join(trained.output.split())
    # … and `train` tracks to the same MLflow (what its command resolves before it opens the tracker)
    assert cli_settings().tracking_uri == uri and cli_settings().corpus_root_url == root
    assert cli_settings(root=str(tmp_path / "flag")).corpus_root_url == f"file://{tmp_path.resolve()}/flag"  # flag wins


def test_precedence_is_flag_then_env_then_profile_then_default(tmp_path, home, monkeypatch):
    profiles = _write_config(tmp_path)
    monkeypatch.setenv("TRACEMILL_CONFIG", str(tmp_path / "tracemill.yaml"))
    monkeypatch.setenv("TRACEMILL_PROFILE", "team")
    assert current_settings().data_root == profiles["team"]["data_root"]  # profile over default
    monkeypatch.setenv("TRACEMILL_DATA_ROOT", "s3://env/data")
    assert current_settings().data_root == "s3://env/data"  # env over profile
    assert current_settings(data_root="s3://flag/data").data_root == "s3://flag/data"  # flag over env
    assert current_settings(profile="k8s").executor == "in_process"  # a profile flag beats TRACEMILL_PROFILE
    monkeypatch.setenv("TRACEMILL_PROFILE", "")  # empty = not set: the default profile, not an error
    assert current_settings().profile == "local" and Settings().home == home.resolve()
    monkeypatch.setenv("TRACEMILL_PROFILE", "staging")
    with pytest.raises(ValueError, match="TRACEMILL_PROFILE='staging': no such profile"):
        current_settings()
    listed = CliRunner().invoke(app, ["corpus", "list", "org/sft"])  # a clean error, not a traceback
    assert listed.exit_code == 1 and "no such profile" in listed.output


def test_terminal_snapshot_and_train_land_where_the_assets_look(tmp_path, home, monkeypatch):
    """End to end under the team profile with an MLflow override: the workspace, the corpus and the
    MLflow run that the CLI writes are exactly where the Dagster resources of that profile read."""
    from pipeline.capture.workspace import Workspace
    from pipeline.corpus.store import list_versions
    from pipeline.demo.agents import populate

    _write_config(tmp_path)
    env = {"TRACEMILL_HOME": str(home), "TRACEMILL_CONFIG": str(tmp_path / "tracemill.yaml"),
           "TRACEMILL_PROFILE": "team", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'override' / 'mlflow.db'}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def tm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                              env={**env, "PATH": "/usr/bin:/bin", "COLUMNS": "200", "HF_HUB_OFFLINE": "1",
                                   "TOKENIZERS_PARALLELISM": "false"})

    populate(Workspace.open("demo"), days=["2026-11-20"], per_day=8, seed=5)  # the SDK, under the same settings
    snap = tm("snapshot", "demo", "--filter", "reward>0", "--to", "deeplake://org/sft", "--json")
    assert snap.returncode == 0, snap.stderr
    trained = tm("train", "sft", "--corpus", "org/sft@v1", "--max-steps", "2", "--batch-size", "2")
    assert trained.returncode == 0, trained.stderr

    resources = build_definitions(load_config()).resources
    root = resources["tracemill"].corpus_root_url()
    assert root == f"file://{tmp_path / 'team-corpora'}"
    assert [v["version"] for v in list_versions("org/sft", root=root)] == ["v1"]  # the CLI's snapshot
    assert resources["tracemill"].open_workspace().root == (tmp_path / "team-data" / "demo").resolve()
    tracker = resources["mlflow"].tracker(resources["tracemill"].home_path)
    assert tracker.tracking_uri == env["MLFLOW_TRACKING_URI"]
    assert tracker.client.search_runs([tracker.experiment_id])  # the CLI's training run is in that store
    assert not (home / "mlflow").exists() and not (home / "corpora").exists() and not (home / "workspaces").exists()
