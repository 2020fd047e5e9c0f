"""Real base models: the built-in `smollm2-135m` name, `lora: auto` by parameter count, `batch_size` as
sequences per optimizer step (gradient accumulation), and, when SmolLM2 has been prepared (`make smollm2`),
a few-step SFT from a Deeplake corpus rendered with its own (fallback Hermes) template whose checkpoint
writes a parseable tool call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.config import TrainSettings
from pipeline.models import SMOLLM2, ModelNotPrepared, require_prepared, resolve_lora, resolve_model
from pipeline.train.recipes import PrefRecipe, RLRecipe, SFTRecipe


def test_smollm2_is_a_built_in_name_that_says_how_to_prepare_it(tmp_path):
    assert resolve_model(SMOLLM2, tmp_path) == str(tmp_path / SMOLLM2)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert require_prepared("/some/local/dir", tmp_path) == "/some/local/dir"
    with pytest.raises(ModelNotPrepared) as err:
        require_prepared(SMOLLM2, tmp_path)
    assert "make smollm2" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / SMOLLM2).mkdir()
    (tmp_path / SMOLLM2 / "config.json").write_text("{}")
    assert require_prepared(SMOLLM2, tmp_path) == str(tmp_path / SMOLLM2)


def test_lora_auto_resolves_by_parameter_count(tiny_model_dir, tmp_path):
    from transformers import LlamaConfig

    big = tmp_path / "big"
    LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                num_attention_heads=32, num_key_value_heads=4).save_pretrained(big)  # ~1.1B, nothing allocated
    assert resolve_lora("auto", str(tiny_model_dir)) is False
    assert resolve_lora("auto", str(big)) is True
    assert resolve_lora(False, str(big)) is False and resolve_lora(True, str(tiny_model_dir)) is True
    with pytest.raises(ValueError, match="train.lora"):
        resolve_lora("sometimes", str(big))
    assert TrainSettings().lora == "auto" and SFTRecipe(base_model="m", output_dir="o").lora == "auto"


@pytest.mark.parametrize(("batch", "devices", "micro"), [(16, 1, None), (16, 1, 4), (16, 2, 2), (8, 2, 8), (12, 1, 3)])
def test_batch_size_means_sequences_per_optimizer_step(batch, devices, micro):
    s = TrainSettings(batch_size=batch, devices=devices, micro_batch_size=micro)
    sft = SFTRecipe.from_settings(s, "m", "o")
    assert sft.per_device_batch_size * sft.gradient_accumulation_steps * devices == batch
    assert sft.per_device_batch_size == min(micro or batch // devices, batch // devices)
    pref = PrefRecipe.from_settings(s, "m", "o", trainer="kto")
    assert pref.per_device_batch_size >= 2
    assert pref.per_device_batch_size * pref.gradient_accumulation_steps * devices == max(2 * devices, batch)
    rl = RLRecipe.from_settings(s, "m", "o")
    assert (rl.per_device_batch_size * rl.gradient_accumulation_steps * devices) % rl.num_generations == 0


def test_micro_batch_that_does_not_divide_the_batch_is_a_one_line_error():
    with pytest.raises(ValueError) as err:
        TrainSettings(batch_size=16, micro_batch_size=5)
    message = err.value.errors()[0]["msg"]  # the config loader prints pydantic's message as its one line
    assert "\n" not in message and "train.micro_batch_size (5)" in message and "divisor of 16" in message


def test_gradient_accumulation_reaches_the_trainer(tiny_model_dir, sft_rows, tmp_path):
    from pipeline.train.sft import build_trainer

    recipe = SFTRecipe.from_settings(TrainSettings(batch_size=8, micro_batch_size=2, max_steps=2), str(tiny_model_dir),
                                     str(tmp_path / "ckpt"))
    trainer = build_trainer([r["input_ids"] for r in sft_rows], [r["loss_mask"] for r in sft_rows],
                            recipe.model_copy(update={"device": "cpu"}))
    assert (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps) == (2, 4)


SMOL_DIR = Path(os.environ.get("TRACEMILL_HOME") or ".tracemill") / "models" / SMOLLM2


@pytest.mark.skipif(not (SMOL_DIR / "config.json").exists(),
                    reason=f"SmolLM2 is not prepared at {SMOL_DIR}: run `make smollm2` once (downloads ~98 MB)")
def test_smollm2_few_step_sft_from_its_own_template_writes_a_parseable_tool_call(tmp_path):
    import polars as pl
    from transformers import AutoTokenizer

    from pipeline.chat import chat_template_for, tokenize_conversation
    from pipeline.corpus.store import snapshot
    from pipeline.evaluate.online import model_policy
    from pipeline.train.sft import train_sft_corpus
    from tests.conftest_model import TOOLS, make_conversations

    tok = AutoTokenizer.from_pretrained(SMOL_DIR)
    chat = chat_template_for(tok)
    assert (chat.family.name, chat.source) == ("chatml-hermes", "fallback")
    convos = make_conversations(8, seed=5)
    rows = [tokenize_conversation(tok, c, TOOLS) for c in convos]
    root = f"file://{tmp_path / 'corpora'}"
    snapshot(pl.DataFrame({"trajectory_id": [f"t{i}" for i in range(len(rows))], "split": ["train"] * len(rows),
                           "input_ids": pl.Series([r[0] for r in rows], dtype=pl.List(pl.Int32)),
                           "loss_mask": pl.Series([r[1] for r in rows], dtype=pl.List(pl.UInt8))}),
             "org/smol", root=root, lineage={"chat_template": chat.describe()})
    recipe = SFTRecipe(base_model=str(SMOL_DIR), output_dir=str(tmp_path / "ckpt"), max_steps=4,
                       per_device_batch_size=4, learning_rate=1e-4, max_length=512, device="cpu", lora=False)
    train_sft_corpus("org/smol@v1", recipe, root=root)
    saved = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert saved.chat_template == chat.template  # the checkpoint carries the template it was trained with
    policy = model_policy(tmp_path / "ckpt", max_new_tokens=40, tools_in_prompt=True, device="cpu")
    policy.tools = TOOLS
    out = policy(make_conversations(1, seed=99)[0][:2])
    assert out["tool_calls"] and out["tool_calls"][0]["name"] == "lookup_price", out
    assert json.loads(out["tool_calls"][0]["arguments"]).get("item")
