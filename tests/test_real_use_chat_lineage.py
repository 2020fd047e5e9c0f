"""The corpus lineage names the chat template a snapshot was rendered with, and changing the template
(same tokenizer files otherwise) forces a full re-tokenization instead of a delta append."""

from __future__ import annotations

import shutil

from transformers import AutoTokenizer

from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec
from pipeline.corpus import stages
from pipeline.demo.agents import populate
from pipeline.lake import stages as lake_stages


def _snapshot(ws, spec, root, model, models):
    lake_stages.refresh_lake(ws)
    stages.curate_corpus(ws, spec)
    return stages.snapshot_corpus(ws, spec, root, model, models)


def test_lineage_names_the_template_and_a_new_template_retokenizes(home, tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    ws = Workspace.open("demo", home=home)
    spec = CorpusSpec(name="sft", filter="reward > 0", target="deeplake://local/sft")
    root, models = f"file://{tmp_path / 'corpora'}", tmp_path / "models"
    populate(ws, days=["2026-11-16"], per_day=8, seed=4)
    first = _snapshot(ws, spec, root, str(model), models)
    chat = first.lineage["chat_template"]
    assert chat["family"] == "tracemill" and chat["source"] == "native" and len(chat["sha"]) == 12
    assert first.lineage["tokenizer"].endswith(f"|tracemill:native:{chat['sha']}")

    tok = AutoTokenizer.from_pretrained(model)  # the same format, another template text: another derivation
    tok.chat_template = tok.chat_template + "{#- edited #}"
    tok.save_pretrained(model)
    edited = _snapshot(ws, spec, root, str(model), models)
    assert edited.lineage["chat_template"]["sha"] != chat["sha"]
    assert edited.lineage["tokens_reused"] == 0 and edited.mode == "replace"


def test_fingerprint_includes_the_template_choice(tiny_model_dir):
    files = stages.tokenizer_fingerprint("m", str(tiny_model_dir))
    native = stages.tokenizer_fingerprint("m", str(tiny_model_dir), "chatml-hermes:native:abc")
    fallback = stages.tokenizer_fingerprint("m", str(tiny_model_dir), "chatml-hermes:fallback:def")
    assert len({files, native, fallback}) == 3 and native.startswith(files)
