"""Token ids and exact assistant-only loss masks for a conversation rendered with the model's template.

Two derivations, whichever the template allows:
- `{% generation %}` markers (tracemill's template, the Hermes fallback, TRL's training templates):
  transformers' `return_assistant_tokens_mask` marks the tokens the template says the model writes.
- otherwise incremental-prefix rendering: for each assistant message i, the text the model writes is
  `render(messages[:i+1])` minus `render_prompt(messages[:i])` (up to and including the family's end
  marker; what a template prints after it, like ChatML's newline, is context). That body is located in
  the whole conversation's text, and the tokens that start inside it are trainable (character offsets
  from the fast tokenizer). A body that cannot be found means the template renders a turn differently in
  context than at generation time; that is an error, never a silent guess.
The text is tokenized once, whole, exactly like a server tokenizes the same template's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.chat.messages import field, hf_messages, hf_tools
from pipeline.chat.render import ChatTemplateError, chat_template_for, end_markers, render_prompt, render_text


def _through_end(body: str, ends: Sequence[str]) -> str:
    """The body up to and including its first end marker (the whole body when it has none)."""
    cuts = [i + len(e) for e in ends if e and (i := body.find(e)) >= 0]
    return body[:min(cuts)] if cuts else body


def _body_start(prompt: str, turn: str) -> int:
    """Where the assistant body starts in `turn` (the conversation up to and including it). Usually the
    generation prompt is a prefix of the turn. Some templates render the context differently when a turn
    follows (Mistral v0.3 prints the system prompt only inside the *last* user message): then the body
    starts after the longest tail of the prompt (its header, at least) that the turn contains."""
    if turn.startswith(prompt):
        return len(prompt)
    common = next((k for k, (a, b) in enumerate(zip(prompt, turn, strict=False)) if a != b), min(len(prompt), len(turn)))
    tail, rest = prompt[common:], turn[common:]
    for m in range(len(tail), 0, -1):
        if (j := rest.find(tail[-m:])) >= 0:
            return common + j + m
    raise ChatTemplateError("an assistant turn does not contain its own generation prompt's header: "
                            "its loss mask cannot be derived from this chat template")


def assistant_spans(tokenizer: Any, messages: Sequence[Any],
                    tools: Sequence[Any] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """(whole text, [start, end) character span of each assistant turn's body), by prefix rendering."""
    full = render_text(tokenizer, messages, tools)
    ends = end_markers(tokenizer)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if field(m, "role") != "assistant":
            continue
        prompt = render_prompt(tokenizer, messages[:i], tools)
        turn = render_text(tokenizer, messages[:i + 1], tools)
        body = _through_end(turn[_body_start(prompt, turn):], ends)
        start = len(prompt) if full.startswith(prompt) and full.startswith(body, len(prompt)) \
            else full.find(body, cursor)
        if not body or start < 0:
            raise ChatTemplateError(f"assistant message {i} renders differently inside the conversation than "
                                    "after its own prompt: its loss mask cannot be derived")
        spans.append((start, start + len(body)))
        cursor = start + len(body)
    return full, spans


def _generation_mask(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None) -> tuple[list, list]:
    chat = chat_template_for(tokenizer)
    out = tokenizer.apply_chat_template(hf_messages(messages, chat.family.call_id), tools=hf_tools(tools),
                                        chat_template=chat.template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    return list(out["input_ids"]), [int(v) for v in out["assistant_masks"]]


def _prefix_mask(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None) -> tuple[list, list]:
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateError("loss masks need a fast tokenizer (character offsets): load it with use_fast=True")
    text, spans = assistant_spans(tokenizer, messages, tools)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= a < e for s, e in spans)) for a, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def tokenize_conversation(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None = None,
                          max_length: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask) of a whole conversation in the model's own template, 1 exactly on the
    tokens of assistant turns (reasoning, content, tool calls, end marker); truncated to `max_length`."""
    if chat_template_for(tokenizer).has_generation_markers:
        ids, mask = _generation_mask(tokenizer, messages, tools)
    else:
        ids, mask = _prefix_mask(tokenizer, messages, tools)
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def tokenize_prompt(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> list[int]:
    """Ids of the generation prompt (`render_prompt`), tokenized like training data (whole text, no
    special tokens added beyond what the template writes)."""
    return list(tokenizer(render_prompt(tokenizer, messages, tools), add_special_tokens=False)["input_ids"])
