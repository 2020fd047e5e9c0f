"""tracemill's own chat format: the template of the tiny local model, rendered segment by segment.

It is one family of `pipeline.chat.families` (the tiny model's tokenizer carries `CHAT_TEMPLATE`), so
corpora, generation and parsing go through the same mechanism as any other model. The segment renderer
here is kept because the tiny tokenizer is *trained* on rendered text before any tokenizer exists, and
because it is an independent derivation the tests compare the template's masks with.

A conversation is rendered as a list of text segments, each flagged trainable or not. Assistant turns (reasoning, content, tool calls and the end marker) are
trainable; the tool list, system, user and tool turns and the assistant *header* are context.

    <|tools|>{tool json}\n{tool json}<|end|><|system|>…<|end|><|user|>…<|end|>
    <|assistant|><think>…</think>text<tool_call>{"name": "f", "arguments": {…}}</tool_call><|end|>
    <|tool|>result<|end|>

`CHAT_TEMPLATE` is the same format as a Jinja template, so `tokenizer.apply_chat_template` (and TRL's
conversational code paths) produce the same text. JSON is written like `json.dumps` with its default
separators, which is what the template's `tojson` filter does in transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipeline.chat.messages import canonical_arguments
from pipeline.chat.messages import field as _field

SYSTEM, USER, ASSISTANT, TOOL, TOOLS, END, PAD = (
    "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|tools|>", "<|end|>", "<|pad|>")
TOOL_CALL_OPEN, TOOL_CALL_CLOSE, THINK_OPEN, THINK_CLOSE = "<tool_call>", "</tool_call>", "<think>", "</think>"
ROLE_HEADERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": TOOL}
# Control tokens never appear in decoded model text we parse; markup tokens must survive decoding.
SPECIAL_TOKENS = [PAD, SYSTEM, USER, ASSISTANT, TOOL, TOOLS, END]
MARKUP_TOKENS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE, THINK_OPEN, THINK_CLOSE]

CHAT_TEMPLATE = (
    "{%- if tools %}<|tools|>{% for tool in tools %}"
    "{% set f = tool.function if tool.function is defined else tool %}{{ f | tojson }}"
    "{% if not loop.last %}{{ '\\n' }}{% endif %}{% endfor %}<|end|>{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}<|assistant|>{% generation %}"
    "{%- set r = message.reasoning if message.reasoning is defined and message.reasoning else "
    "(message.reasoning_content if message.reasoning_content is defined else none) %}"
    "{%- if r %}<think>{{ r }}</think>{% endif %}"
    "{%- if message.content %}{{ message.content }}{% endif %}"
    "{%- if message.tool_calls %}{% for call in message.tool_calls %}"
    "{% set c = call.function if call.function is defined else call %}"
    "<tool_call>{\"name\": {{ c.name | tojson }}, \"arguments\": "
    "{{ c.arguments | tojson if c.arguments is mapping else (c.arguments if c.arguments else '{}') }}}"
    "</tool_call>{% endfor %}{% endif %}<|end|>{% endgeneration %}"
    "{%- else %}<|{{ message.role }}|>{% if message.content %}{{ message.content }}{% endif %}<|end|>"
    "{%- endif %}{% endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _render_call(call: Any) -> str:
    inner = _field(call, "function") or call
    body = {"name": _field(inner, "name"), "arguments": canonical_arguments(_field(inner, "arguments"))}
    return f"{TOOL_CALL_OPEN}{json.dumps(body, ensure_ascii=False)}{TOOL_CALL_CLOSE}"


def render_tools(tools: Sequence[Any] | None) -> str:
    """Tool definitions, one compact JSON object per line (OpenAI `{"function": …}` wrappers removed)."""
    if not tools:
        return ""
    defs = [(_field(t, "function") or t) for t in tools]
    return TOOLS + "\n".join(json.dumps(d, ensure_ascii=False) for d in defs) + END


def render_assistant_body(message: Any) -> str:
    """What the model writes for an assistant turn, end marker included."""
    reasoning = _field(message, "reasoning") or _field(message, "reasoning_content")
    text = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}" if reasoning else ""
    text += _field(message, "content") or ""
    text += "".join(_render_call(c) for c in (_field(message, "tool_calls") or []))
    return text + END


def render_segments(messages: Sequence[Any], tools: Sequence[Any] | None = None) -> list[tuple[str, bool]]:
    """The conversation as (text, trainable) segments; joining the texts gives the template's output."""
    segments: list[tuple[str, bool]] = []
    if tools:
        segments.append((render_tools(tools), False))
    for m in messages:
        role = _field(m, "role")
        if role == "assistant":
            segments.append((ASSISTANT, False))
            segments.append((render_assistant_body(m), True))
        elif role in ROLE_HEADERS:
            segments.append((f"{ROLE_HEADERS[role]}{_field(m, 'content') or ''}{END}", False))
        else:
            raise ValueError(f"unknown message role {role!r}")
    return segments


def render_text(messages: Sequence[Any], tools: Sequence[Any] | None = None) -> str:
    return "".join(text for text, _ in render_segments(messages, tools))


def render_prompt(messages: Sequence[Any], tools: Sequence[Any] | None = None) -> str:
    """The context for generating the next assistant turn: up to and including its header."""
    return render_text(messages, tools) + ASSISTANT
