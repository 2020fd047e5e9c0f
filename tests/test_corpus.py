"""Versioned corpora on real Deeplake datasets in tmp_path (no mocks)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import deeplake
import numpy as np
import polars as pl
import pytest

from pipeline.corpus.store import (
    CorpusNotFound,
    CorpusVersionNotFound,
    diff_versions,
    list_versions,
    open_corpus,
    parse_ref,
    resolve_corpus_url,
    snapshot,
)


def make_rows(ids: range | list[int], reward_bump: dict[int, float] | None = None) -> pl.DataFrame:
    """Synthetic trajectories; rewards are multiples of 1/4 so float32 storage compares exactly."""
    bump = reward_bump or {}
    return pl.DataFrame({
        "trajectory_id": [f"t{i:03d}" for i in ids],
        "task_id": [f"task{i % 3}" for i in ids],
        "agent": ["shop-agent"] * len(ids),
        "model": ["tiny-llama"] * len(ids),
        "split": ["eval" if i % 4 == 0 else "train" for i in ids],
        "reward": [bump.get(i, i / 4) for i in ids],
        "messages": [f'[{{"role":"user","content":"q{i}"}},{{"role":"assistant","content":"a{i}"}}]' for i in ids],
        "tools": ['[{"name":"calculator"}]'] * len(ids),
        "input_ids": [list(range(i, i + i % 5 + 2)) for i in ids],
        "loss_mask": [[0] + [1] * (i % 5 + 1) for i in ids],
        "n_tokens": [i % 5 + 2 for i in ids],
        "n_tool_calls": [i % 3 for i in ids],
    })


@pytest.fixture
def root(tmp_path) -> str:
    return f"file://{tmp_path}/corpora"


def ids_of(ref: str, root: str) -> list[str]:
    return sorted(open_corpus(ref, root).column("trajectory_id"))


def as_dicts(df: pl.DataFrame) -> list[dict]:
    return df.sort("trajectory_id").to_dicts()


def test_refs_and_urls(tmp_path):
    assert parse_ref("org/sft@v3") == ("org/sft", "v3")
    assert parse_ref("deeplake://org/sft") == ("deeplake://org/sft", None)
    assert parse_ref("s3://bucket/corpora/org/sft@v12") == ("s3://bucket/corpora/org/sft", "v12")
    with pytest.raises(ValueError, match="@v<N>"):
        parse_ref("org/sft@latest")
    assert resolve_corpus_url("deeplake://org/sft", "s3://b/corpora") == "s3://b/corpora/org/sft"
    assert resolve_corpus_url("org/sft@v2", "file:///data/corpora/") == "file:///data/corpora/org/sft"
    assert resolve_corpus_url("org/sft", str(tmp_path)) == f"file://{tmp_path}/org/sft"
    assert resolve_corpus_url("file:///x/y") == "file:///x/y"
    assert resolve_corpus_url(str(tmp_path / "c")) == f"file://{tmp_path}/c"


def test_version_lifecycle(root):
    v1 = snapshot(make_rows(range(12)), "org/sft", root=root, message="first",
                  lineage={"filter": "reward > 0", "source_partitions": ["2026-11-20"], "tokenizer": "bpe384"})
    assert (v1.version, v1.created, v1.mode, v1.appended, v1.parent) == ("v1", True, "append", 12, None)

    # Same content in another order: idempotent, no new version.
    again = snapshot(make_rows(range(12)).reverse(), "org/sft", root=root, lineage={})
    assert (again.version, again.created, again.mode) == ("v1", False, "unchanged")
    assert again.content_hash == v1.content_hash

    # Superset: only the delta is appended; v1 keeps exactly its rows.
    v2 = snapshot(make_rows(range(20)), "org/sft", root=root, lineage={"source_partitions": ["2026-11-21"]})
    assert (v2.version, v2.mode, v2.appended, v2.removed, v2.parent) == ("v2", "append", 8, 0, "v1")
    assert ids_of("org/sft@v1", root) == [f"t{i:03d}" for i in range(12)]
    assert len(open_corpus("org/sft@v2", root)) == 20

    # Removed and changed rows: replace, exactly the new rows; older tags untouched.
    new = make_rows(list(range(4, 22)), reward_bump={5: 9.0})
    v3 = snapshot(new, "org/sft", root=root, lineage={})
    assert (v3.version, v3.mode, v3.row_count, v3.removed) == ("v3", "replace", 18, 5)  # t000-3 + changed t005
    assert v3.appended == 3  # t005 again, t020, t021
    latest = open_corpus("org/sft", root)
    assert latest.version == "v3"
    assert as_dicts(latest.to_polars()) == as_dicts(new.cast({"input_ids": pl.List(pl.Int32),
                                                              "loss_mask": pl.List(pl.UInt8),
                                                              "reward": pl.Float32, "n_tokens": pl.Int32}))
    assert as_dicts(open_corpus("org/sft@v1", root).to_polars().select("trajectory_id", "reward")) == \
        as_dicts(make_rows(range(12)).select("trajectory_id", pl.col("reward").cast(pl.Float32)))

    # Lineage per version, readable after the fact.
    versions = list_versions("org/sft", root)
    assert [v["version"] for v in versions] == ["v1", "v2", "v3"]
    assert [v["row_count"] for v in versions] == [12, 20, 18]
    assert [v["parent"] for v in versions] == [None, "v1", "v2"]
    assert versions[0]["filter"] == "reward > 0" and versions[0]["tokenizer"] == "bpe384"
    assert versions[1]["source_partitions"] == ["2026-11-21"] and versions[0]["message"] == "first"
    assert versions[2]["content_hash"] == v3.content_hash
    assert all(datetime.fromisoformat(v["created_at"]) for v in versions)
    assert open_corpus("org/sft@v2", root).lineage["mode"] == "append"

    d = diff_versions("org/sft@v1", "v3", root)
    assert (d["from"], d["to"], d["added"], d["removed"], d["changed"], d["unchanged"]) == ("v1", "v3", 10, 4, 1, 7)
    assert d["removed_sample"][:2] == ["t000", "t001"] and d["changed_sample"] == ["t005"]


def test_eval_slice_and_token_tensors(root):
    snapshot(make_rows(range(16)), "org/sft", root=root, lineage={})
    c = open_corpus("org/sft@v1", root)
    ev = c.query("SELECT * WHERE \"split\" = 'eval'")
    assert sorted(ev.column("trajectory_id")) == ["t000", "t004", "t008", "t012"]
    assert ev.version == "v1" and len(ev.query("SELECT * WHERE reward > 1.5")) == 2

    ids = c.column("input_ids")
    assert all(isinstance(a, np.ndarray) and a.dtype == np.int32 for a in ids)
    by_id = {r["trajectory_id"]: r for r in c.rows()}
    np.testing.assert_array_equal(by_id["t007"]["input_ids"], np.arange(7, 11))
    np.testing.assert_array_equal(by_id["t007"]["loss_mask"], [0, 1, 1, 1])
    assert c.column("loss_mask")[0].dtype == np.uint8
    assert isinstance(c.column("reward"), np.ndarray) and c.column("n_tokens").dtype == np.int32
    assert c.column("input_ids", 2, 4)[1].tolist() == [3, 4, 5, 6, 7]  # block read of rows 2..3
    df = c.to_polars()
    assert df.schema["input_ids"] == pl.List(pl.Int32) and "row_hash" not in df.columns
    assert df["n_tool_calls"].to_list() == [i % 3 for i in range(16)]  # extra column passed through


def test_missing_corpus_and_version_errors(root):
    with pytest.raises(CorpusNotFound, match="snapshot it first"):
        open_corpus("org/nope", root)
    snapshot(make_rows(range(3)), "org/sft", root=root, lineage={})
    snapshot(make_rows(range(4)), "org/sft", root=root, lineage={})
    with pytest.raises(CorpusVersionNotFound, match=r"no version v9; available: v1, v2"):
        open_corpus("org/sft@v9", root)
    with pytest.raises(ValueError, match="without @vN"):
        snapshot(make_rows(range(3)), "org/sft@v2", root=root, lineage={})
    with pytest.raises(ValueError, match="unique"):
        snapshot(pl.concat([make_rows(range(2))] * 2), "org/sft", root=root, lineage={})


def test_extra_columns_nulls_and_schema_change(root):
    rows = make_rows(range(6)).with_columns(
        pl.Series("reward", [1.0, None, 0.5, 0.0, None, 1.0]),
        pl.Series("latency_ms", [5, None, 7, 8, 9, 10]),
        pl.Series("started_at", [datetime(2026, 11, 20, 12, i) for i in range(6)]))
    snapshot(rows, "org/sft", root=root, lineage={})
    c = open_corpus("org/sft", root)
    assert c.schema["latency_ms"] == "nullable[int64]" and c.schema["started_at"] == "text"
    assert c.column("latency_ms")[:3] == [5, None, 7]
    assert np.isnan(c.column("reward")[1])  # float nulls are stored as NaN
    assert c.column("started_at")[0].startswith("2026-11-20 12:00")

    # A dropped column and a changed type rebuild the stored columns; the old tag keeps its schema.
    changed = rows.drop("latency_ms").with_columns(pl.col("n_tool_calls").cast(pl.Float64) / 2)
    v2 = snapshot(changed, "org/sft", root=root, lineage={})
    assert (v2.mode, v2.removed, v2.appended) == ("replace", 6, 6)
    c2 = open_corpus("org/sft@v2", root)
    assert len(c2) == 6 and sorted(c2.columns) == sorted(changed.columns)
    assert c2.schema["n_tool_calls"] == "float64" and c2.column("n_tool_calls").tolist() == [0, 0.5, 1, 0, 0.5, 1]
    assert open_corpus("org/sft@v1", root).column("latency_ms")[:3] == [5, None, 7]


def test_interrupted_snapshot_is_invisible_and_recovered(root):
    url = resolve_corpus_url("org/sft", root)
    snapshot(make_rows(range(5)), url, lineage={})
    junk = "{c.name: ['junk' if c.name == 'trajectory_id' else ds[c.name][0]] for c in ds.schema.columns}"
    # A writer that dies before commit: its rows never reach storage.
    script = f"import deeplake, os\nds = deeplake.open({url!r})\nds.append({junk})\nos._exit(9)"
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    # A writer that dies between commit and tag: an untagged commit at the head.
    ds = deeplake.open(url)
    ds.delete(0)
    ds.append({c.name: ["junk2" if c.name == "trajectory_id" else ds[c.name][0]] for c in ds.schema.columns})
    ds.commit("crashed before tag")
    del ds
    assert ids_of("org/sft", root) == [f"t{i:03d}" for i in range(5)]

    v2 = snapshot(make_rows(range(7)), url, lineage={})
    assert (v2.version, v2.mode, v2.appended) == ("v2", "append", 2)  # delta against v1, not the junk
    assert ids_of("org/sft@v2", root) == [f"t{i:03d}" for i in range(7)]


def test_token_columns_follow_the_derivation_key(root):
    """Token columns are not hashed (an incremental snapshot must not re-read every token): what they
    hold is pinned by the lineage's tokenizer / max_length, and a change there rebuilds every row."""
    lin = {"tokenizer": "bpe384", "max_length": 64}
    v1 = snapshot(make_rows(range(6)), "org/sft", root=root, lineage=lin)
    assert v1.lineage["derivation"] == lin
    # Same text, same derivation (given or inherited): unchanged; more rows: a plain delta.
    assert snapshot(make_rows(range(6)), "org/sft", root=root, lineage={}).mode == "unchanged"
    v2 = snapshot(make_rows(range(8)), "org/sft", root=root, lineage={"source_partitions": ["d2"]})
    assert (v2.mode, v2.appended, v2.removed, v2.lineage["derivation"]) == ("append", 2, 0, lin)

    # A shorter max_length nobody recorded: n_tokens is hashed, so exactly the truncated rows change.
    short = make_rows(range(8)).with_columns(pl.col("input_ids", "loss_mask").list.head(4),
                                             pl.col("n_tokens").clip(upper_bound=4))
    v3 = snapshot(short, "org/sft", root=root, lineage={})
    assert (v3.mode, v3.appended, v3.removed) == ("replace", 2, 2)  # t003 (5 tokens), t004 (6)
    assert sorted(len(a) for a in open_corpus("org/sft@v3", root).column("input_ids")) == [2, 2, 3, 3, 4, 4, 4, 4]

    # Same text tokenized by another tokenizer: a new version that rebuilds every row, not "unchanged".
    retok = short.with_columns(pl.col("input_ids").list.eval(pl.element() + 100))
    v4 = snapshot(retok, "org/sft", root=root, lineage={"tokenizer": "bpe1k", "max_length": 64})
    assert (v4.version, v4.mode, v4.appended, v4.removed) == ("v4", "replace", 8, 8)
    assert v4.content_hash != v3.content_hash
    stored = open_corpus("org/sft@v4", root).to_polars().sort("trajectory_id")["input_ids"].to_list()
    assert stored == retok["input_ids"].to_list()
    assert open_corpus("org/sft@v2", root).column("input_ids")[0].tolist() == [0, 1]  # old tag intact
    # A recorded max_length is part of the derivation key too.
    v5 = snapshot(retok, "org/sft", root=root, lineage={"tokenizer": "bpe1k", "max_length": 4})
    assert (v5.mode, v5.appended, v5.removed) == ("replace", 8, 8)


def test_content_hash_is_reproducible_and_order_free(root, tmp_path):
    rows = make_rows(range(10))
    a = snapshot(rows, "org/a", root=root, lineage={"tokenizer": "t"})
    b = snapshot(rows.reverse().select(sorted(rows.columns)), "org/b", root=root, lineage={"tokenizer": "t"})
    assert a.content_hash == b.content_hash
    changed = snapshot(make_rows(range(10), reward_bump={3: 7.0}), "org/b", root=root, lineage={})
    assert changed.content_hash != a.content_hash and (changed.appended, changed.removed) == (1, 1)
