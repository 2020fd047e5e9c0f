"""One chat format for training, generation and parsing, with exact per-token loss masks.

A conversation is rendered as a list of text segments, each flagged trainable or not, and tokenized
segment by segment: the mask then follows the segment boundaries exactly, instead of being guessed
back from character offsets. Assistant turns (reasoning, content, tool calls and the end marker) are
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
import re
from collections.abc import Sequence
from typing import Any

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


def _field(obj: Any, key: str, default: Any = None) -> Any:
    """Messages may be plain dicts or pydantic models (schema.Message)."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def canonical_arguments(arguments: Any) -> Any:
    """Arguments as a JSON value. Strings are decoded (twice when an export double-encoded them);
    a string that is not JSON is kept as is, so rendering never fails on bad data."""
    value = arguments if arguments not in (None, "") else {}
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


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


def encode_segments(tokenizer: Any, segments: Sequence[tuple[str, bool]],
                    max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids and a 0/1 loss mask, one tokenizer call per segment so the mask is exact.
    A BOS token is prepended (masked) when the tokenizer defines one, as its models expect."""
    ids: list[int] = []
    mask: list[int] = []
    if getattr(tokenizer, "bos_token_id", None) is not None:
        ids.append(tokenizer.bos_token_id)
        mask.append(0)
    for text, trainable in segments:
        seg = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(seg)
        mask.extend([int(trainable)] * len(seg))
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def tokenize_conversation(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None = None,
                          max_length: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask) of a whole conversation, truncated from the end to `max_length`."""
    return encode_segments(tokenizer, render_segments(messages, tools), max_length)


def tokenize_prompt(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> list[int]:
    """Ids of `render_prompt(...)`, tokenized the same way as training data."""
    segments = render_segments(messages, tools) + [(ASSISTANT, False)]
    return encode_segments(tokenizer, segments)[0]


_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.S)
_THINK_RE = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.S)


def parse_assistant_output(text: str) -> dict[str, Any]:
    """A generated assistant turn back as a message: content, tool calls (arguments as a canonical
    JSON string, like the schema) and reasoning. Text after the end marker is ignored; calls whose
    JSON does not parse are listed under `invalid_tool_calls` rather than raising."""
    text = text.split(END, 1)[0]
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "")
    reasoning = "".join(m.group(1) for m in _THINK_RE.finditer(text)) or None
    text = _THINK_RE.sub("", text)
    calls: list[dict[str, Any]] = []
    invalid: list[str] = []
    for m in _CALL_RE.finditer(text):
        try:
            obj = json.loads(m.group(1))
            name = obj["name"]
            args = canonical_arguments(obj.get("arguments"))
            if not isinstance(name, str):
                raise TypeError("tool name is not a string")
        except (ValueError, KeyError, TypeError, AttributeError):
            invalid.append(m.group(1))
            continue
        calls.append({"name": name, "arguments": json.dumps(args, ensure_ascii=False)})
    content = _CALL_RE.sub("", text)
    if TOOL_CALL_OPEN in content:  # an unterminated call (generation ran out of tokens)
        content, _, rest = content.partition(TOOL_CALL_OPEN)
        invalid.append(rest)
    return {"role": "assistant", "content": content.strip() or None, "tool_calls": calls,
            "reasoning": reasoning, "invalid_tool_calls": invalid}
