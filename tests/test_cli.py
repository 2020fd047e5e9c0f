"""The command line, run as a user runs it (a real subprocess of the installed entry point)."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

FIXTURES = Path(os.environ.get("TRACEMILL_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "realworld")


def tm(*args, home):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env={"TRACEMILL_HOME": str(home), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_workspace_commands_and_schema(tmp_path):
    assert tm("workspace", "create", "ft-live", home=tmp_path).returncode == 0
    dup = tm("workspace", "create", "ft-live", home=tmp_path)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    assert json.loads(tm("workspace", "list", "--json", home=tmp_path).stdout) == ["ft-live"]
    missing = tm("workspace", "show", "nope", home=tmp_path)
    assert missing.returncode == 1 and "tracemill workspace create nope" in missing.stderr
    schema = json.loads(tm("schema", home=tmp_path).stdout)
    assert "trajectory_id" in schema["trajectory"]["properties"]
    assert tm("workspace", "delete", "ft-live", "--yes", home=tmp_path).returncode == 0
    assert json.loads(tm("workspace", "list", "--json", home=tmp_path).stdout) == []


def test_import_then_show_counts(tmp_path):
    tm("workspace", "create", "imp", home=tmp_path)
    out = tm("import", str(FIXTURES / "tau2_bench"), str(FIXTURES / "openai_chat_finetune_jsonl"),
             "-w", "imp", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["trajectories"] == 11 and report["outcomes"] > 0 and report["errors"] == []
    shown = json.loads(tm("workspace", "show", "imp", "--json", home=tmp_path).stdout)
    assert shown["trajectories"] == 11 and shown["tool_calls"] > 0 and shown["quarantined"] == 0
    again = json.loads(tm("import", str(FIXTURES / "tau2_bench"), "-w", "imp", "--json", home=tmp_path).stdout)
    assert again["trajectories"] == 5  # re-sent …
    assert json.loads(tm("workspace", "show", "imp", "--json", home=tmp_path).stdout)["trajectories"] == 11  # … not duplicated
    bad = tm("import", str(tmp_path / "nope.json"), "-w", "imp", home=tmp_path)
    assert bad.returncode == 1 and "no such file" in bad.stderr


def test_snapshot_command_versions_and_waits(tmp_path):
    from pipeline.capture.workspace import Workspace
    from pipeline.demo.agents import populate

    populate(Workspace.open("ft-live", home=tmp_path), days=["2026-11-20"], per_day=12, seed=5)
    first = json.loads(tm("snapshot", "ft-live", "--filter", "reward>0", "--to", "deeplake://org/sft", "--json",
                          home=tmp_path).stdout)
    assert first["version"] == "v1" and first["created"] and first["rows"] > 0
    again = json.loads(tm("snapshot", "ft-live", "--filter", "reward>0", "--to", "deeplake://org/sft", "--json",
                          home=tmp_path).stdout)
    assert again["version"] == "v1" and again["mode"] == "unchanged"
    held = json.loads(tm("snapshot", "ft-live", "--filter", "reward>=0", "--to", "deeplake://org/sft",
                         "--wait", "coverage=0.99,max=1000d", "--json", home=tmp_path).stdout)
    assert held["mode"] == "waiting" and held["wait"]["missing_outcomes"] > 0  # 30% of rewards held back
    bad = tm("snapshot", "ft-live", "--filter", "reward >> 0", "--to", "deeplake://org/sft", home=tmp_path)
    assert bad.returncode == 1 and "unexpected '>'" in bad.stderr
    listed = json.loads(tm("corpus", "list", "org/sft", "--json", home=tmp_path).stdout)
    assert [v["version"] for v in listed] == ["v1"]
    shown = json.loads(tm("corpus", "show", "org/sft@v1", "--json", home=tmp_path).stdout)
    assert shown["rows"] == first["rows"] and shown["lineage"]["filter"] == "reward>0"
    missing = tm("corpus", "show", "org/sft@v7", home=tmp_path)
    assert missing.returncode == 1 and "v1" in missing.stderr

    trained = tm("train", "sft", "--corpus", "org/sft@v1", "--max-steps", "2", "--batch-size", "2",
                 "--out", str(tmp_path / "ck"), home=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "ck" / "config.json").exists() and "2 steps" in trained.stdout
    assert "registered as models:/tracemill-sft/1" in " ".join(trained.stdout.split())  # rich may wrap the line
    wrong = tm("train", "dpo", "--corpus", "org/sft@v1", home=tmp_path)
    assert wrong.returncode == 1 and "holds sft rows" in wrong.stderr
    no_report = tm("eval", "report", str(tmp_path / "ck"), home=tmp_path)
    assert no_report.returncode == 1 and "materialize the eval_" in no_report.stderr


def test_import_without_timestamps_says_how_to_place_them_in_a_day(tmp_path):
    tm("workspace", "create", "sg", home=tmp_path)
    src = FIXTURES / "sharegpt" / "fastchat_dummy_conversation.first5.json"
    out = tm("import", str(src), "-w", "sg", home=tmp_path)
    assert out.returncode == 0, out.stderr
    today = datetime.now(UTC).date().isoformat()  # issue 15: timeless files land on their import day, not 1970
    assert f"landed on {today}" in out.stderr and "--default-time" in out.stderr
    placed = tm("import", str(src), "-w", "sg", "--default-time", "2026-11-20", home=tmp_path)
    assert placed.returncode == 0 and "landed on" not in placed.stderr
    from pipeline.capture.workspace import Workspace

    assert Workspace("sg", tmp_path).days("trajectory") == sorted([today, "2026-11-20"])
