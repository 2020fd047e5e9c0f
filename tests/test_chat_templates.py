"""The model's own chat template, tools included: upstream templates (tests/fixtures/chat_templates/,
see its README for sources and licences) applied to a LOCAL tokenizer, masks checked token by token
against an independent derivation, the automatic Hermes fallback for templates that drop tools, and
tool calls parsed back from each family's native format. Nothing downloads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.chat import (
    chat_template_for,
    family_of,
    parse_assistant_output,
    render_prompt,
    render_text,
    stop_token_ids,
    tokenize_conversation,
    tokenize_prompt,
)
from pipeline.chat import tracemill as tm
from pipeline.chat.masks import _prefix_mask
from tests.conftest_model import TOOLS, make_conversations

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"
# family → (template file, special tokens the real vocabulary has, bos, eos)
MODELS = {
    "qwen2.5": ("qwen2_5_instruct.jinja", ["<|im_start|>", "<|im_end|>"], None, "<|im_end|>"),
    "smollm2": ("smollm2_135m_instruct.jinja", ["<|im_start|>", "<|im_end|>"], "<|im_start|>", "<|im_end|>"),
    "llama3.1": ("llama3_1_instruct.jinja", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                             "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
                 "<|begin_of_text|>", "<|eot_id|>"),
    "mistral-v0.3": ("mistral_7b_instruct_v0_3.jinja", ["<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]",
                                                        "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
                                                        "[/TOOL_RESULTS]"], "<s>", "</s>"),
}
# The independent derivation: each family's grammar for "what the assistant writes" (header … end marker),
# applied to the decoded text with regular expressions; no rendering of prefixes, no offsets.
GRAMMAR = {
    "qwen2.5": (r"<\|im_start\|>assistant\n", r"<\|im_end\|>"),
    "smollm2": (r"<\|im_start\|>assistant\n", r"<\|im_end\|>"),
    "llama3.1": (r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n", r"<\|eot_id\|>"),
    "mistral-v0.3": (r"\[/INST\]|\[/TOOL_RESULTS\]", r"</s>"),
    "tiny": (r"<\|assistant\|>", r"<\|end\|>"),
}
EXPECTED_FIRST_CALL = {  # the first assistant turn, in each family's own tool-call format
    "qwen2.5": '<tool_call>\n{"name": "lookup_price", "arguments": {"item": "%s"}}\n</tool_call><|im_end|>',
    "smollm2": '<tool_call>\n{"name": "lookup_price", "arguments": {"item": "%s"}}\n</tool_call><|im_end|>',
    "llama3.1": '{"name": "lookup_price", "parameters": {"item": "%s"}}<|eot_id|>',
    "mistral-v0.3": '[TOOL_CALLS] [{"name": "lookup_price", "arguments": {"item": "%s"}, "id": "%s"}]</s>',
    "tiny": '<tool_call>{"name": "lookup_price", "arguments": {"item": "%s"}}</tool_call><|end|>',
}


def _conversation(with_followup: bool) -> list[dict]:
    """Multi-turn tool use: two tool calls, their results, an answer; optionally a second user turn and
    another tool round (roles still alternate user/assistant as Mistral's template demands)."""
    convo = make_conversations(1, seed=3)[0]
    if not with_followup:
        return convo
    more = make_conversations(1, seed=4)[0]
    return convo + [{**more[1], "content": "And " + more[1]["content"]}] + [
        {**m, **({"tool_calls": [{**c, "id": c["id"] + "b"} for c in m["tool_calls"]]} if m.get("tool_calls") else {}),
         **({"tool_call_id": m["tool_call_id"] + "b"} if m.get("tool_call_id") else {})} for m in more[2:]]


@pytest.fixture(scope="module")
def tokenizers(tool_conversations):
    """A local byte-level BPE per family with that family's special tokens and its upstream template."""
    from pipeline.train.tiny_model import train_tokenizer

    texts = [tm.render_text(c, TOOLS) for c in tool_conversations]
    out = {"tiny": train_tokenizer(texts, 512)}
    for name, (file, specials, bos, eos) in MODELS.items():
        tok = train_tokenizer(texts, 512)
        tok.add_special_tokens({"additional_special_tokens": specials})
        tok.bos_token, tok.eos_token = bos, eos
        tok.chat_template = (FIXTURES / file).read_text()
        out[name] = tok
    return out


def _expected_mask(tokenizer, ids: list[int], name: str) -> list[int]:
    """Token k is trainable iff it starts inside header…end in the decoded text (token starts come from
    decoding growing prefixes, not from the tokenizer's offsets)."""
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    header, end = GRAMMAR[name]
    spans = [(h.end(), e.end()) for h in re.finditer(header, text)
             if (e := re.compile(end).search(text, h.end())) is not None]
    starts = [len(tokenizer.decode(ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False))
              for k in range(len(ids))]
    return [int(any(a <= s < b for a, b in spans)) for s in starts]


@pytest.mark.parametrize("followup", [False, True])
@pytest.mark.parametrize("name", ["tiny", *MODELS])
def test_masks_token_by_token_against_the_family_grammar(tokenizers, name, followup):
    tok, convo = tokenizers[name], _conversation(followup)
    ids, mask = tokenize_conversation(tok, convo, TOOLS)
    assert ids == tok(render_text(tok, convo, TOOLS), add_special_tokens=False)["input_ids"]  # one whole text
    assert mask == _expected_mask(tok, ids, name)
    n_assistant = sum(m["role"] == "assistant" for m in convo)
    runs = [t for t in re.split(r"0+", "".join(map(str, mask))) if t]
    assert len(runs) == n_assistant  # one trained run per assistant turn, nothing else trained
    first = next(i for i, m in enumerate(mask) if m)
    first_end = first + len(runs[0])
    item = json.loads(convo[2]["tool_calls"][0]["arguments"])["item"]
    want = EXPECTED_FIRST_CALL[name] % ((item, family_of(tok).call_id(convo[2]["tool_calls"][0]["id"]))
                                        if name == "mistral-v0.3" else item)
    assert tok.decode(ids[first:first_end], skip_special_tokens=False).strip() == want.strip()


@pytest.mark.parametrize("name", ["tiny", "smollm2"])
def test_generation_markers_and_prefix_rendering_agree(tokenizers, name):
    """Templates with {% generation %} (tracemill's, the Hermes fallback) get the same mask both ways."""
    tok, convo = tokenizers[name], _conversation(True)
    assert chat_template_for(tok).has_generation_markers
    assert tokenize_conversation(tok, convo, TOOLS) == _prefix_mask(tok, convo, TOOLS)


def test_the_tiny_model_is_one_case_of_the_mechanism(tokenizers, tool_conversations):
    """Same ids, masks and prompts as tracemill's segment renderer gave before: `make demo` is unchanged."""
    tok = tokenizers["tiny"]
    assert chat_template_for(tok).describe()["family"] == "tracemill"
    for convo in tool_conversations[:6]:
        ids, mask = tokenize_conversation(tok, convo, TOOLS)
        old_ids, old_mask = [], []
        for text, trainable in tm.render_segments(convo, TOOLS):
            seg = tok(text, add_special_tokens=False)["input_ids"]
            old_ids += seg
            old_mask += [int(trainable)] * len(seg)
        assert (ids, mask) == (old_ids, old_mask)
        assert render_prompt(tok, convo[:3], TOOLS) == tm.render_prompt(convo[:3], TOOLS)


def test_template_that_drops_tools_falls_back_to_hermes_automatically(tokenizers):
    smol, qwen = chat_template_for(tokenizers["smollm2"]), chat_template_for(tokenizers["qwen2.5"])
    assert (smol.family.name, smol.source) == ("chatml-hermes", "fallback")
    assert (qwen.family.name, qwen.source) == ("chatml-hermes", "native")
    assert chat_template_for(tokenizers["llama3.1"]).source == chat_template_for(tokenizers["mistral-v0.3"]).source \
        == "native"
    text = render_text(tokenizers["smollm2"], _conversation(False), TOOLS)
    assert "<tools>" in text and '"name": "lookup_price"' in text and "<tool_response>" in text
    # the probe is what decides: the same template with tool support added is used as is
    assert smol.describe() != qwen.describe() and set(smol.describe()) == {"family", "source", "sha"}


@pytest.mark.parametrize("name", ["tiny", *MODELS])
def test_prompt_is_a_prefix_and_generated_turns_parse_back(tokenizers, name):
    tok, convo = tokenizers[name], _conversation(False)
    family = family_of(tok)
    ids, mask = tokenize_conversation(tok, convo, TOOLS)
    runs = [m.span() for m in re.finditer("1+", "".join(map(str, mask)))]  # what the model is trained to write
    assistants = [(i, m) for i, m in enumerate(convo) if m["role"] == "assistant"]
    for (i, message), (a, b) in zip(assistants, runs, strict=True):
        prompt = tokenize_prompt(tok, convo[:i], TOOLS)
        if name != "mistral-v0.3":  # Mistral prints the system prompt only in the last user turn
            assert ids[:len(prompt)] == prompt and a == len(prompt)
        written = tok.decode(ids[a:b], skip_special_tokens=False)
        parsed = parse_assistant_output(written + "trailing junk", family)
        assert [(c["name"], json.loads(c["arguments"])) for c in parsed["tool_calls"]] == [
            (c["name"], json.loads(c["arguments"])) for c in message.get("tool_calls") or []]
        assert parsed["content"] == (message["content"] or None)
        assert parse_assistant_output(written)["tool_calls"] == parsed["tool_calls"]  # recognised without family
    assert set(stop_token_ids(tok)) >= {tok.convert_tokens_to_ids(family.end_markers[0])}


def test_parse_each_format_and_its_failures():
    assert parse_assistant_output('{"name": "f", "parameters": {"a": 1}}<|eot_id|>')["tool_calls"] == [
        {"name": "f", "arguments": '{"a": 1}'}]
    assert parse_assistant_output('{"name": "f", "para')["invalid_tool_calls"]
    mistral = parse_assistant_output('Sure.[TOOL_CALLS] [{"name": "f", "arguments": {}, "id": "abcdefghi"}]</s>')
    assert mistral["content"] == "Sure." and mistral["tool_calls"] == [{"name": "f", "arguments": "{}"}]
    # GRPO decodes with special tokens skipped: Mistral's [TOOL_CALLS] is gone, the list still reads as calls
    assert parse_assistant_output(' [{"name": "f", "arguments": {"x": 2}}]')["tool_calls"][0]["name"] == "f"
    hermes = parse_assistant_output('<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call><|im_end|>x')
    assert hermes["tool_calls"] == [{"name": "g", "arguments": "{}"}] and hermes["content"] is None


@pytest.mark.parametrize("name", ["tiny", *MODELS])
def test_preference_collator_masks_tool_turns_in_every_family(tokenizers, name):
    """TRL gives a multi-turn completion one loss mask; `assistant_only` with the family's markers cuts it
    back to the assistant bodies, exactly the corpus mask."""
    import torch

    from pipeline.train.tool_masking import assistant_only, marker_ids

    tok, convo = tokenizers[name], _conversation(True)
    ids, mask = tokenize_conversation(tok, convo, TOOLS)
    start = mask.index(1)  # the completion starts where the first assistant body does
    completion = torch.tensor([[0] * start + [1] * (len(ids) - start)])
    markers = marker_ids(tok)
    assert markers is not None
    assert assistant_only(torch.tensor([ids]), completion, *markers)[0].tolist() == mask
