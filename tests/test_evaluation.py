"""Evaluation: metric plumbing, batched generation, and a memorising model beating an untrained one."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.chat import tokenize_conversation, tokenize_prompt
from pipeline.evaluate.offline import answers_match, evaluate_checkpoint, generate_turns, generation_tasks
from pipeline.train.sft import SFTRecipe, train_sft
from tests.conftest_model import TOOLS, make_conversations


@pytest.fixture(scope="module")
def eval_rows(tiny_model_dir):
    """Corpus-shaped rows: JSON-string messages/tools plus the stored tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = []
    for convo in make_conversations(2, seed=3):
        ids, mask = tokenize_conversation(tok, convo, TOOLS)
        rows.append({"messages": json.dumps(convo), "tools": json.dumps(TOOLS), "input_ids": ids, "loss_mask": mask})
    return rows


@pytest.fixture(scope="module")
def memorised_dir(tiny_model_dir, eval_rows, tmp_path_factory):
    recipe = SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path_factory.mktemp("memorised")),
                       max_steps=100, learning_rate=1e-2, per_device_batch_size=2, warmup_ratio=0.0, seed=0)
    return train_sft(eval_rows, recipe).checkpoint_dir


def test_answer_matching_and_tasks():
    assert answers_match(" 3.50 ", "3.5") == (False, True)
    assert answers_match("The  total\nis 4", "The total is 4") == (True, True)
    assert answers_match("four", "4") == (False, False)
    assert answers_match(None, "1,000") == (False, False) and answers_match("1000", "1,000") == (False, True)
    convo = make_conversations(1)[0]
    assert generation_tasks(convo) == [("tool_call", 2), ("tool_call", 4), ("final", 6)]
    assert generation_tasks(convo[:-1]) == [("tool_call", 2), ("tool_call", 4)]


def test_batched_generation_matches_one_by_one(tiny_model_dir, eval_rows):
    """Left padding must not change greedy outputs (positions follow the attention mask)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(tiny_model_dir), AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    convo = json.loads(eval_rows[0]["messages"])
    prompts = [tokenize_prompt(tok, convo[:i], TOOLS) for i in (2, 4, 6)]
    assert len({len(p) for p in prompts}) == 3
    batched = generate_turns(model, tok, prompts, max_new_tokens=8, batch_size=3)
    single = [generate_turns(model, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single


def test_memorised_model_beats_untrained(tiny_model_dir, memorised_dir, eval_rows):
    base = evaluate_checkpoint(str(tiny_model_dir), eval_rows, max_examples=2, max_new_tokens=40)
    tuned = evaluate_checkpoint(str(memorised_dir), eval_rows, max_examples=2, max_new_tokens=40)
    for m in (base, tuned):
        assert m["n_loss_examples"] == 2 and m["n_generation_examples"] == 2
        assert m["n_tool_call_turns"] == 4 and m["n_final_answers"] == 2 and m["n_loss_tokens"] > 50
        for key in ("tool_name_accuracy", "tool_call_accuracy", "tool_call_parse_rate", "final_answer_accuracy",
                    "final_answer_exact_accuracy"):
            assert 0.0 <= m[key] <= 1.0, (key, m[key])
        assert m["final_answer_exact_accuracy"] <= m["final_answer_accuracy"]
        assert m["tool_call_accuracy"] <= m["tool_name_accuracy"]
        assert math.isfinite(m["loss"]) and m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    assert base["loss"] > 5.0 and base["tool_call_accuracy"] == 0.0  # a random init knows nothing
    assert tuned["loss"] < 0.3 * base["loss"]
    # memorised: every tool call (name and JSON arguments) and both final answers come back exactly
    assert tuned["tool_call_accuracy"] == tuned["final_answer_exact_accuracy"] == 1.0, tuned


def test_rows_without_tokens_are_tokenized(tiny_model_dir, eval_rows):
    stripped = [{"messages": json.loads(r["messages"]), "tools": TOOLS} for r in eval_rows[:1]]
    m = evaluate_checkpoint(str(tiny_model_dir), stripped, max_examples=1, max_new_tokens=4)
    full = evaluate_checkpoint(str(tiny_model_dir), eval_rows[:1], max_examples=1, max_new_tokens=4)
    assert m["loss"] == pytest.approx(full["loss"], rel=1e-5) and m["n_loss_tokens"] == full["n_loss_tokens"]


def test_arguments_are_checked_against_the_tool_schema():
    from pipeline.demo.world import TOOLS
    from pipeline.evaluate.offline import arguments_valid

    assert arguments_valid("lookup_price", {"item": "apples"}, TOOLS)
    assert not arguments_valid("lookup_price", {}, TOOLS)                      # required missing
    assert not arguments_valid("lookup_price", {"item": 3}, TOOLS)             # wrong type
    assert not arguments_valid("no_such_tool", {"item": "apples"}, TOOLS)      # unknown tool
    assert not arguments_valid("lookup_price", "apples", TOOLS)                # not an object
    assert arguments_valid("convert", {"amount": 2, "from_currency": "USD", "to_currency": "EUR"}, TOOLS)
    assert not arguments_valid("convert", {"amount": True, "from_currency": "USD", "to_currency": "EUR"}, TOOLS)
