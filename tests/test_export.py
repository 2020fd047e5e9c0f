"""Corpus versions exported in TRL's formats: HF datasets, Parquet and JSONL, from real Deeplake snapshots."""

from __future__ import annotations

import json

import orjson
import polars as pl
import pytest

from pipeline.chat.tracemill import render_text
from pipeline.corpus.export import export_corpus, openai_arguments, to_hf_dataset, trl_rows
from pipeline.corpus.rows import TRAINING_FORMATS as FORMATS
from pipeline.corpus.rows import build_rows, with_row_key
from pipeline.corpus.store import open_corpus, snapshot
from pipeline.corpus.tokenize import tokenize_format_rows
from pipeline.demo.world import Task
from tests.test_formats import joined_world


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, tiny_model_dir):
    """One corpus per format (format recorded in lineage, as the pipeline does), plus a tokenized SFT one."""
    from transformers import AutoTokenizer

    home = tmp_path_factory.mktemp("home")
    joined, prefs = joined_world(home)
    root = f"file://{home}/corpora"
    rows = {}
    for fmt in FORMATS:
        rows[fmt], _ = build_rows(fmt, joined, prefs, {})
        snapshot(with_row_key(fmt, rows[fmt]), f"org/{fmt}", lineage={"format": fmt}, root=root)
    tokenized, _ = tokenize_format_rows("sft", rows["sft"], AutoTokenizer.from_pretrained(str(tiny_model_dir)), 1024)
    snapshot(tokenized, "org/sft_tokens", lineage={"format": "sft"}, root=root)
    return rows, root


def test_sft_export_renders_exactly_like_training(corpora, tiny_model_dir):
    from transformers import AutoTokenizer

    rows, root = corpora
    ds = to_hf_dataset("org/sft@v1", root)
    assert ds.num_rows == rows["sft"].height and {"messages", "tools", "split"} <= set(ds.column_names)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    original = dict(rows["sft"].select("trajectory_id", "messages").iter_rows())
    for row in ds:
        tools = json.loads(row["tools"])  # a JSON string, which TRL's trainers json.loads themselves
        assert all(t["type"] == "function" and "name" in t["function"] for t in tools)
        call_ids = set()
        for m in row["messages"]:
            for call in m["tool_calls"] or []:
                assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
                call_ids.add(call["id"])
            if m["role"] == "tool":
                assert m["tool_call_id"] in call_ids and m["name"]
        # the exported OpenAI shape goes through the HF chat template to the same text we train on
        text = tok.apply_chat_template(row["messages"], tools=tools, tokenize=False)
        assert text == render_text(orjson.loads(original[row["trajectory_id"]]), tools)
    tokens = to_hf_dataset("org/sft_tokens", root, include_tokens=True)
    stored = open_corpus("org/sft_tokens", root)
    assert {"input_ids", "assistant_masks"} <= set(tokens.column_names)  # TRL's pre-tokenized names
    assert tokens[0]["assistant_masks"] == stored.column("loss_mask")[0].tolist()


def test_preference_and_rl_exports_have_trl_fields(corpora):
    rows, root = corpora
    dpo = to_hf_dataset("org/dpo", root)
    assert dpo.num_rows == rows["dpo"].height and "trajectory_id" not in dpo.column_names  # snapshot key only
    for r in dpo:
        assert [m["role"] for m in r["prompt"]] == ["system", "user"]
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
        assert r["chosen"] != r["rejected"] and r["chosen_id"] != r["rejected_id"]
    kto = to_hf_dataset("org/kto", root)
    assert kto.features["label"].dtype == "bool"
    assert kto["label"] == [reward >= 0.5 for reward in kto["reward"]]
    assert kto[0]["completion"][0]["role"] == "assistant"
    rl = to_hf_dataset("org/rl", root)
    assert rl.num_rows == len(set(rl["task_id"])) == rows["rl"].height
    for r in rl:
        assert [m["role"] for m in r["prompt"]] == ["system", "user"]
        assert Task.from_dict(json.loads(r["ground_truth"])).task_id == r["task_id"]


def test_file_exports_round_trip(corpora, tmp_path):
    import datasets

    _, root = corpora
    for fmt in FORMATS:
        expected = trl_rows(open_corpus(f"org/{fmt}", root))
        lines = export_corpus(f"org/{fmt}", tmp_path / f"{fmt}.jsonl", root=root).read_bytes().splitlines()
        assert [orjson.loads(line) for line in lines] == expected
        table = pl.read_parquet(export_corpus(f"org/{fmt}", tmp_path / f"{fmt}.parquet", "parquet", root=root))
        assert table.height == len(expected) and table.columns == list(expected[0])
        saved = datasets.load_from_disk(str(export_corpus(f"org/{fmt}", tmp_path / fmt, "hf", root=root)))
        assert saved.num_rows == len(expected) and saved.column_names == list(expected[0])
    with pytest.raises(ValueError):
        export_corpus("org/sft", tmp_path / "x.csv", "csv", root=root)  # type: ignore[arg-type]


def test_versions_splits_and_format_inference(corpora, tmp_path):
    rows, _ = corpora
    root = f"file://{tmp_path}/corpora"
    kto = rows["kto"]
    snapshot(kto, "org/pref", root=root)  # no format in lineage: inferred from the columns
    snapshot(kto.head(5), "org/pref", root=root)
    assert to_hf_dataset("org/pref@v1", root).num_rows == kto.height
    latest = to_hf_dataset("org/pref", root)
    assert latest.num_rows == 5 and "label" in latest.column_names
    evals = to_hf_dataset("org/pref@v1", root, split="eval")
    assert set(evals["split"]) == {"eval"} and evals.num_rows == (kto["split"] == "eval").sum()


def test_arguments_are_canonical_json_strings():
    assert openai_arguments('{"a":1,"b":"x"}') == '{"a": 1, "b": "x"}'  # what chat.tracemill renders
    assert openai_arguments(json.dumps('{"a": 1}')) == '{"a": 1}'  # double-encoded export
    assert openai_arguments({"a": 1}) == '{"a": 1}'
    assert openai_arguments(None) == "{}"
    assert openai_arguments("not json") == "not json"
