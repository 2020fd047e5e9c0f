"""Issue 12, item 3: an empty result never wedges a corpus. A snapshot that would hold 0 rows makes no
version unless asked (and says why: trajectories, outcomes, what the filter kept), and a corpus that
already holds an empty version (made on request, or by older code) still takes the next one."""

from __future__ import annotations

import json

import deeplake
import pytest

from pipeline.capture.workspace import Workspace
from pipeline.corpus.store import EmptySnapshot, list_versions, open_corpus, resolve_corpus_url, snapshot
from pipeline.demo.agents import deliver_late, populate
from tests.test_cli import tm
from tests.test_corpus import make_rows


@pytest.fixture
def root(tmp_path) -> str:
    return f"file://{tmp_path}/corpora"


def test_empty_rows_make_no_version_unless_asked(root):
    with pytest.raises(EmptySnapshot, match="allow_empty"):
        snapshot(make_rows(range(3)).head(0), "org/sft", root=root)
    assert not deeplake.exists(resolve_corpus_url("org/sft", root))  # nothing created, not even v0


def test_a_corpus_with_an_empty_version_takes_the_next_one(root):
    v1 = snapshot(make_rows(range(3)).head(0), "org/sft", root=root, allow_empty=True)
    assert (v1.version, v1.row_count) == ("v1", 0)
    v2 = snapshot(make_rows(range(5)), "org/sft", root=root)  # IndexError: too many indices, before
    assert (v2.version, v2.row_count, v2.appended) == ("v2", 5, 5)
    assert len(open_corpus("org/sft@v2", root)) == 5 and len(open_corpus("org/sft@v1", root)) == 0
    v3 = snapshot(make_rows(range(5)).head(0), "org/sft", root=root, allow_empty=True)  # back to empty
    assert (v3.version, v3.row_count, v3.removed) == ("v3", 0, 5)
    assert snapshot(make_rows(range(2)), "org/sft", root=root).version == "v4"


def test_cli_refuses_an_empty_first_snapshot_and_says_why(tmp_path):
    ws = Workspace.open("ft-live", home=tmp_path)
    stats = populate(ws, days=["2026-11-20"], per_day=6, seed=2, late_fraction=1.0, preferences_per_day=0)
    args = ("snapshot", "ft-live", "--filter", "reward>0", "--to", "deeplake://org/sft")
    empty = tm(*args, home=tmp_path)
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    line = " ".join(empty.stderr.split())
    assert "6 trajectories, 0 with an outcome" in line and "filter `reward>0` kept 0" in line, line
    assert "--allow-empty" in line
    assert not (tmp_path / "corpora" / "org" / "sft").exists()

    asked = json.loads(tm(*args, "--allow-empty", "--json", home=tmp_path).stdout)
    assert (asked["version"], asked["rows"], asked["created"]) == ("v1", 0, True)
    deliver_late(ws, stats)  # the rewards arrive: the corpus with an empty v1 takes v2
    later = tm(*args, "--json", home=tmp_path)
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)["version"] == "v2" and json.loads(later.stdout)["rows"] > 0
    assert [v["row_count"] for v in list_versions("org/sft", root=f"file://{tmp_path}/corpora")][0] == 0


def test_the_trainable_check_fails_cleanly_while_no_version_exists(root):
    from pipeline.config import CorpusSpec
    from pipeline.corpus.stages import check_corpus

    report = check_corpus(CorpusSpec(name="sft", target="deeplake://org/sft"), root)
    assert (report.passed, report.version, report.rows) == (False, "", 0)
