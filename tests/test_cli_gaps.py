"""Issue 16 item 4: the command line's small gaps, each run as a user runs it (a real subprocess of the CLI
against a real home: populated workspace, real Deeplake snapshots, a real tiny training run).

`--version`; `corpus export` in TRL's shapes (loaded back with `datasets` and polars); help on every option
and argument; `train <method>` examples that name a corpus of that method; an unpinned `--corpus` trains on
the latest version and says which; no "MLflow run None" with `--no-track`; import errors without ": :";
`corpus diff` of two different corpora refused in one line; the import counter counts trajectories;
snapshot stages with counts and an ETA.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import typer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ("sft", "dpo", "kto", "rl")
TRL = {"sft": {"messages", "tools"}, "dpo": {"prompt", "chosen", "rejected"},
       "kto": {"prompt", "completion", "label"}, "rl": {"prompt", "ground_truth"}}


def tm(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {"TRACEMILL_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": REPO, "COLUMNS": "200",
           "TOKENIZERS_PARALLELISM": "false", "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A workspace with two captured days and one snapshot per training format (org/<format>@v1)."""
    from pipeline.capture.workspace import Workspace
    from pipeline.demo.agents import populate

    home = tmp_path_factory.mktemp("gaps")
    populate(Workspace.open("ft-live", home=home), days=["2026-11-20", "2026-11-21"], per_day=20, seed=5)
    made = {}
    for fmt in FORMATS:
        made[fmt] = tm("snapshot", "ft-live", "--filter", "reward >= 0", "--format", fmt,
                       "--to", f"deeplake://org/{fmt}", home=home)
        assert made[fmt].returncode == 0, made[fmt].stderr
    return home, made


def command_tree() -> list[tuple[str, object]]:
    from pipeline.cli.main import app

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():  # typer vendors click: duck-typed groups
            yield from walk(sub, f"{path} {name}")

    return list(walk(typer.main.get_command(app), "tracemill"))


def test_version_names_tracemill_and_its_stack(tmp_path):
    proc = tm("--version", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    from importlib.metadata import version

    assert first == f"tracemill {version('tracemill')}"
    stack = dict(line.split() for line in rest)
    for name in ("torch", "trl", "deeplake", "dagster", "mlflow", "transformers", "datasets"):
        assert stack[name] == version(name)


def test_every_option_and_argument_has_help():
    missing = [f"{path}: {p.name}" for path, cmd in command_tree() for p in cmd.params
               if not getattr(p, "hidden", False) and not (getattr(p, "help", None) or "").strip()]
    assert missing == []
    assert any(path == "tracemill corpus export" for path, _ in command_tree())


def test_train_help_examples_name_a_corpus_of_that_method():
    from pipeline.train.methods import METHODS

    commands = dict(command_tree())
    for method in METHODS:
        cmd = commands[f"tracemill train {method.name}"]
        corpus = next(p for p in cmd.params if p.name == "corpus")
        texts = [corpus.help, cmd.help]
        for text in texts:
            named = {f for f in FORMATS if f"org/{f}@" in text}
            assert named == {method.corpus_format}, (method.name, text)
        assert "latest" in corpus.help  # what an unpinned --corpus does, said where it is used


def test_snapshot_shows_each_stage_with_counts_and_time(home):
    _, made = home
    rows = {line.split()[0]: line for line in made["sft"].stderr.splitlines() if line.strip()}
    assert list(rows) == ["ingest", "curate", "tokenize", "write"], made["sft"].stderr
    assert " 2/2 " in rows["ingest"] and "days" in rows["ingest"] and "eta" in rows["ingest"]
    assert " 40/40 " in rows["curate"] and "trajectories" in rows["curate"]
    snapped = orjson.loads(tm("corpus", "show", "org/sft@v1", "--json", home=home[0]).stdout)
    assert f" {snapped['rows']}/{snapped['rows']} " in rows["write"] and "v1" in rows["write"]
    assert "0:00:" in rows["write"]  # elapsed time
    assert made["sft"].stdout.startswith("file://")  # the result stays on stdout, the bars on stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_corpus_export_writes_trl_shapes_that_load_back(home, fmt, tmp_path):
    import datasets
    import polars as pl

    h, _ = home
    rows = orjson.loads(tm("corpus", "show", f"org/{fmt}@v1", "--json", home=h).stdout)["rows"]
    assert rows > 0
    hf = tm("corpus", "export", f"org/{fmt}@v1", "--format", "hf", "--out", str(tmp_path / "hf"), home=h)
    assert hf.returncode == 0 and f"wrote {rows} {fmt} rows" in hf.stdout, hf.stderr
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    assert loaded.num_rows == rows and TRL[fmt] <= set(loaded.column_names)
    pq = tm("corpus", "export", f"org/{fmt}@v1", "--format", "parquet", "--out", str(tmp_path / "c.parquet"), home=h)
    assert pq.returncode == 0, pq.stderr
    table = pl.read_parquet(tmp_path / "c.parquet")
    assert table.height == rows and TRL[fmt] <= set(table.columns)
    js = tm("corpus", "export", f"org/{fmt}", "--format", "jsonl", "--split", "train", "--json",
            "--out", str(tmp_path / "c.jsonl"), home=h)
    assert js.returncode == 0, js.stderr
    assert js.stderr.strip() == f"note: --corpus org/{fmt} names no version: using its latest, org/{fmt}@v1 " \
                                f"(pass org/{fmt}@v1 to pin it)"
    lines = datasets.load_dataset("json", data_files=str(tmp_path / "c.jsonl"), split="train")
    assert set(lines["split"]) == {"train"} and TRL[fmt] <= set(lines.column_names)
    assert orjson.loads(js.stdout)["rows"] == lines.num_rows
    if fmt == "kto":
        assert set(lines["label"]) <= {True, False}
    if fmt in ("sft", "dpo"):
        first = loaded[0]["messages" if fmt == "sft" else "chosen"][0]
        assert set(first) >= {"role", "content"}  # conversational: a list of messages, as TRL reads them
    again = tm("corpus", "export", f"org/{fmt}@v1", "--format", "hf", "--out", str(tmp_path / "hf"), home=h)
    one_line(again, "already exists", "--overwrite")


def test_export_and_diff_refuse_in_one_line(home, tmp_path):
    h, _ = home
    one_line(tm("corpus", "export", "org/sft@v1", "--format", "csv", "--out", str(tmp_path / "x"), home=h),
             "--format 'csv'", "hf, parquet or jsonl")
    one_line(tm("corpus", "export", "org/sft@v9", "--out", str(tmp_path / "x"), home=h), "v9")
    one_line(tm("corpus", "diff", "org/sft@v1", "org/dpo@v1", home=h), "org/sft and org/dpo are different corpora")
    same = tm("corpus", "diff", "org/sft@v1", "v1", "--json", home=h)
    assert same.returncode == 0 and orjson.loads(same.stdout)["added"] == 0, same.stderr


def test_unpinned_corpus_trains_on_the_latest_and_untracked_runs_say_so(home, tmp_path):
    h, _ = home
    proc = tm("train", "sft", "--corpus", "org/sft", "--max-steps", "1", "--batch-size", "2", "--no-track",
              "--out", str(tmp_path / "ck"), home=h)
    assert proc.returncode == 0, proc.stderr
    assert "note: --corpus org/sft names no version: using its latest, org/sft@v1" in proc.stderr
    out = " ".join(proc.stdout.split())
    assert "training sft on" in out and "@v1" in out and "(not tracked)" in out
    assert "MLflow run" not in out and "None" not in out


def test_import_errors_have_no_doubled_colon_and_the_counter_counts_trajectories(tmp_path):
    from pipeline.capture.importers import import_paths
    from pipeline.capture.workspace import Workspace

    good = [{"messages": [{"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(450)]
    src = tmp_path / "chats.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in good) + b'{"messages": [ broken\n')

    seen: list[int] = []
    summary = import_paths([src], Workspace.open("imp", home=tmp_path / "h"), progress=False, batch_size=100,
                           on_progress=lambda done, trajectories: seen.append(trajectories))
    assert summary.trajectories == 450
    assert seen[-1] == 450 and max(seen) == 450 and seen == sorted(seen) and len(seen) >= 3  # never lines × 2

    proc = tm("import", str(src), "-w", "cli", "--create", "--default-time", "2026-11-20", home=tmp_path / "h2")
    assert proc.returncode == 0, proc.stderr
    error = next(line for line in proc.stderr.splitlines() if "invalid JSON" in line)
    assert error.startswith(f"{src} line 451: invalid JSON") and ": :" not in error, error
