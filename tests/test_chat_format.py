"""The chat format: rendering, exact loss masks, the Jinja template twin, parsing generated turns."""

from __future__ import annotations

import json

import pytest

from pipeline.chat import parse_assistant_output, tokenize_conversation, tokenize_prompt
from pipeline.chat.tracemill import ASSISTANT, END, render_prompt, render_segments, render_text
from tests.conftest_model import TOOLS, make_conversations


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def convo():
    return make_conversations(1, seed=7)[0]


def _hf_messages(messages):
    """The same conversation in Hugging Face's shape: OpenAI-style tool calls with dict arguments."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [{"type": "function", "id": c["id"],
                                "function": {"name": c["name"], "arguments": json.loads(c["arguments"])}}
                               for c in m["tool_calls"]]
        out.append(m)
    return out


def test_segments_flag_only_assistant_bodies_trainable(convo):
    segs = render_segments(convo, TOOLS)
    trainable = [text for text, t in segs if t]
    assert len(trainable) == 3  # two tool-calling turns and the final answer
    assert all(text.endswith(END) for text in trainable)
    assert trainable[0].startswith('<tool_call>{"name": "lookup_price", "arguments": {"item": ')
    assert trainable[-1] == convo[-1]["content"] + END
    context = "".join(text for text, t in segs if not t)
    assert "<|tools|>" in context and "You are a shop assistant" in context and "How much do" in context
    assert ASSISTANT in context  # headers are prompt, not trained
    assert context.count("<|tool|>") == 2


def test_masks_token_by_token(tokenizer, convo):
    ids, mask = tokenize_conversation(tokenizer, convo, TOOLS)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    # Segment-wise tokenization equals tokenizing the whole text (markers are atomic tokens).
    assert ids == tokenizer(render_text(convo, TOOLS), add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    end_id, asst_id = tokenizer.convert_tokens_to_ids(END), tokenizer.convert_tokens_to_ids(ASSISTANT)
    # Walk the sequence: a trainable span starts right after each <|assistant|> and ends with its <|end|>.
    inside = False
    spans, current = [], []
    for tok_id, tok, m in zip(ids, tokens, mask, strict=True):
        if inside:
            assert m == 1, f"assistant token {tok!r} not trained"
            current.append(tok_id)
            if tok_id == end_id:
                spans.append(current)
                inside, current = False, []
        else:
            assert m == 0, f"context token {tok!r} trained"
            inside = tok_id == asst_id
    assert len(spans) == 3 and not inside
    decoded = [tokenizer.decode(s, skip_special_tokens=False) for s in spans]
    assert decoded == [t for t, trainable in render_segments(convo, TOOLS) if trainable]
    assert sum(mask) == sum(len(s) for s in spans)


def test_tokenize_truncates_and_prompt_matches(tokenizer, convo):
    ids, mask = tokenize_conversation(tokenizer, convo, TOOLS, max_length=40)
    assert len(ids) == len(mask) == 40
    prompt_ids = tokenize_prompt(tokenizer, convo[:-1], TOOLS)
    full_ids, full_mask = tokenize_conversation(tokenizer, convo, TOOLS)
    assert full_ids[:len(prompt_ids)] == prompt_ids  # the prompt is a prefix of the training sequence
    assert full_mask[len(prompt_ids) - 1] == 0 and full_mask[len(prompt_ids)] == 1
    assert render_prompt(convo[:-1], TOOLS).endswith(ASSISTANT)


def test_jinja_template_renders_the_same_text(tokenizer, convo):
    expected = render_text(convo, TOOLS)
    for messages in (convo, _hf_messages(convo)):
        assert tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False) == expected
    prompt = tokenizer.apply_chat_template(convo[:-1], tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert prompt == render_prompt(convo[:-1], TOOLS)
    reasoning = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok", "reasoning": "think"}]
    assert tokenizer.apply_chat_template(reasoning, tokenize=False) == render_text(reasoning)
    assert "<think>think</think>ok" in render_text(reasoning)


def test_template_generation_markers_give_the_same_mask(tokenizer, convo):
    """TRL's assistant_only_loss path (return_assistant_tokens_mask) agrees with our masks."""
    out = tokenizer.apply_chat_template(_hf_messages(convo), tools=TOOLS, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = tokenize_conversation(tokenizer, convo, TOOLS)
    assert out["input_ids"] == ids and out["assistant_masks"] == mask


def test_double_encoded_and_invalid_arguments_render():
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "1", "name": "f", "arguments": json.dumps(json.dumps({"a": 1}))}]}
    assert '{"name": "f", "arguments": {"a": 1}}' in render_text([call])
    call["tool_calls"][0]["arguments"] = "{not json"
    assert '"arguments": "{not json"' in render_text([call])
    with pytest.raises(ValueError):
        render_segments([{"role": "robot", "content": "x"}])


def test_parse_round_trip(convo):
    for message in convo:
        if message["role"] != "assistant":
            continue
        body = [t for t, trainable in render_segments([message]) if trainable][0]
        parsed = parse_assistant_output(body + "<|pad|><|pad|>")
        assert parsed["content"] == message["content"]
        assert [(c["name"], json.loads(c["arguments"])) for c in parsed["tool_calls"]] == [
            (c["name"], json.loads(c["arguments"])) for c in message.get("tool_calls", [])]


def test_parse_messy_output():
    text = ('<think>hmm</think>Let me check.<tool_call>{"name": "calc", "arguments": {"x": [1, 2]}}</tool_call>'
            '<tool_call>{broken}</tool_call><|end|>ignored<tool_call>{"name": "z"}</tool_call>')
    out = parse_assistant_output(text)
    assert out["reasoning"] == "hmm" and out["content"] == "Let me check."
    assert out["tool_calls"] == [{"name": "calc", "arguments": '{"x": [1, 2]}'}]
    assert out["invalid_tool_calls"] == ["{broken}"]
    cut = parse_assistant_output('answer <tool_call>{"name": "f", "argu')
    assert cut["content"] == "answer" and not cut["tool_calls"] and cut["invalid_tool_calls"]
    assert parse_assistant_output("")["content"] is None
