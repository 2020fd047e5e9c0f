"""Session fixtures for model tests: tool-use conversations and one tiny model built from them.

Imported into conftest.py with `from tests.conftest_model import *`; building the model once per
session keeps the training and evaluation tests within seconds.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

__all__ = ["TOOLS", "make_conversation", "make_conversations", "tool_conversations", "tiny_model_dir", "sft_rows",
           "sft_corpus"]

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "lookup_price", "description": "Unit price of an item.",
        "parameters": {"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]}}},
    {"type": "function", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}},
]
ITEMS = ["apple", "pear", "lemon", "bread", "milk", "cheese"]


def make_conversation(rng: random.Random, index: int = 0) -> list[dict[str, Any]]:
    """lookup_price → calculator → final answer, with the price drawn per conversation, so numbers
    must be copied from tool results (the pattern the demo world trains)."""
    item, qty = rng.choice(ITEMS), rng.randint(2, 9)
    price = rng.randint(1, 99) / 4
    total = round(qty * price, 2)
    c1, c2 = f"call_{index}_1", f"call_{index}_2"
    return [
        {"role": "system", "content": "You are a shop assistant. Use tools."},
        {"role": "user", "content": f"How much do {qty} {item} cost?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": c1, "name": "lookup_price", "arguments": json.dumps({"item": item})}]},
        {"role": "tool", "tool_call_id": c1, "name": "lookup_price", "content": f"{price}"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": c2, "name": "calculator", "arguments": json.dumps({"expression": f"{qty}*{price}"})}]},
        {"role": "tool", "tool_call_id": c2, "name": "calculator", "content": f"{total}"},
        {"role": "assistant", "content": f"{total}"},
    ]


def make_conversations(n: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    return [make_conversation(rng, i) for i in range(n)]


@pytest.fixture(scope="session")
def tool_conversations() -> list[list[dict[str, Any]]]:
    return make_conversations(24, seed=0)


def _demo_world_texts(conversations: list[list[dict[str, Any]]]) -> list[str]:
    """The same conversations under the demo world's tools and system prompt, when that module exists,
    so the shared tokenizer also encodes demo-world corpora compactly (its tool JSON alone is ~940
    characters: ~260 tokens with this vocabulary, ~440 with one that never saw it)."""
    from pipeline.chat.tracemill import render_text

    try:
        from pipeline.demo.world import SYSTEM_PROMPT
        from pipeline.demo.world import TOOLS as DEMO_TOOLS
    except ImportError:
        return []
    swap = [[{**m, "content": SYSTEM_PROMPT} if m["role"] == "system" else m for m in c] for c in conversations]
    return [render_text(c, DEMO_TOOLS) for c in swap]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tool_conversations):
    """A ~0.3M-parameter Llama (hidden 64, 2 layers, vocab 512) with a BPE trained on the
    conversations; treat it as read-only."""
    from pipeline.chat.tracemill import render_text
    from pipeline.train.tiny_model import build_tiny_model

    texts = [render_text(c, TOOLS) for c in tool_conversations] + _demo_world_texts(tool_conversations)
    return build_tiny_model(texts, tmp_path_factory.mktemp("tiny_model"), vocab_size=512, hidden_size=64,
                            num_layers=2, num_heads=4, max_position=1024, seed=0)


@pytest.fixture(scope="session")
def sft_rows(tiny_model_dir) -> list[dict[str, Any]]:
    """Eight tokenized tool-use conversations: input ids and assistant-only loss masks."""
    from transformers import AutoTokenizer

    from pipeline.chat import tokenize_conversation

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return [dict(zip(("input_ids", "loss_mask"), tokenize_conversation(tok, c, TOOLS), strict=True))
            for c in make_conversations(8, seed=1)]


@pytest.fixture(scope="session")
def sft_corpus(sft_rows, tmp_path_factory) -> tuple[str, str]:
    """The same rows as a Deeplake corpus, plus two eval rows the train query must leave out."""
    import polars as pl

    from pipeline.corpus.store import snapshot

    root = f"file://{tmp_path_factory.mktemp('corpora')}"
    n = len(sft_rows) + 2
    snapshot(pl.DataFrame({
        "trajectory_id": [f"t{i}" for i in range(n)], "split": ["train"] * len(sft_rows) + ["eval"] * 2,
        "input_ids": pl.Series([list(map(int, r["input_ids"])) for r in sft_rows + sft_rows[:2]], dtype=pl.List(pl.Int32)),
        "loss_mask": pl.Series([list(map(int, r["loss_mask"])) for r in sft_rows + sft_rows[:2]], dtype=pl.List(pl.UInt8)),
    }), "org/sft", root=root)
    return "org/sft@v1", root
