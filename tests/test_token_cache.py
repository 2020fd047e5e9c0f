"""Snapshots tokenize only the curated rows that are new since the last one, with the same result."""

from transformers import AutoTokenizer

from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec
from pipeline.corpus import stages
from pipeline.corpus.store import open_corpus
from pipeline.corpus.tokenize import tokenize_format_rows
from pipeline.demo.agents import populate
from pipeline.lake import stages as lake_stages


def _snapshot(ws, spec, root, model, models):
    lake_stages.refresh_lake(ws)
    curated, _ = stages.curate_corpus(ws, spec)
    return curated, stages.snapshot_corpus(ws, spec, root, model, models)


def test_second_snapshot_tokenizes_only_new_rows_and_matches_a_full_pass(home, tmp_path, tiny_model_dir):
    ws = Workspace.open("demo", home=home)
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft")
    root, model, models = f"file://{tmp_path / 'corpora'}", str(tiny_model_dir), tmp_path / "models"
    populate(ws, days=["2026-11-16"], per_day=12, seed=4)
    _, first = _snapshot(ws, spec, root, model, models)
    assert first.lineage["tokens_reused"] == 0

    populate(ws, days=["2026-11-17"], per_day=12, seed=5)
    curated, second = _snapshot(ws, spec, root, model, models)
    assert second.version == "v2" and second.mode == "append"
    assert 0 < second.lineage["tokens_reused"] < curated.height  # the first day's rows came from the cache

    full, _ = tokenize_format_rows("sft", curated, AutoTokenizer.from_pretrained(model), spec.train.max_length,
                                   spec.tools_in_prompt)
    stored = open_corpus(second.ref).to_polars(["trajectory_id", "input_ids", "loss_mask"]).sort("trajectory_id")
    expect = full.select("trajectory_id", "input_ids", "loss_mask").sort("trajectory_id")
    assert stored["trajectory_id"].to_list() == expect["trajectory_id"].to_list()
    assert [list(x) for x in stored["input_ids"]] == expect["input_ids"].to_list()
    assert [list(x) for x in stored["loss_mask"]] == expect["loss_mask"].to_list()

    # another max_length is another derivation: nothing is reused, every row is tokenized again
    longer = spec.model_copy(update={"train": spec.train.model_copy(update={"max_length": 1024})})
    _, third = _snapshot(ws, longer, root, model, models)
    assert third.lineage["tokens_reused"] == 0 and third.mode == "replace" and third.row_count > 0
    assert third.lineage["max_length"] == 1024
