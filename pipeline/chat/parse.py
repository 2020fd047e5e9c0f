"""A generated assistant turn back into a message, in the format of the model's own chat family.

Three ways models write tool calls: Hermes tags (`<tool_call>{json}</tool_call>`: ChatML/Qwen/SmolLM2
and tracemill's own format), a bare JSON object (`{"name": …, "parameters": …}`: Llama 3.1+), and a
JSON list after `[TOOL_CALLS]` (Mistral). Generation, offline and online evaluation and GRPO rewards all
parse through `parse_assistant_output`; given no family (a reward function only sees text) the format
is recognised from the text itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pipeline.chat.families import ALL_END_MARKERS, CONTROL_TOKENS, ChatFamily
from pipeline.chat.messages import canonical_arguments

TOOL_CALL_OPEN, TOOL_CALL_CLOSE, THINK_OPEN, THINK_CLOSE = "<tool_call>", "</tool_call>", "<think>", "</think>"
MISTRAL_CALLS = "[TOOL_CALLS]"
_CALL_RE = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.S)
_THINK_RE = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.S)
Parsed = tuple[str, list[dict[str, str]], list[str]]  # (content, calls, invalid call texts)


def _call(obj: Any, args_keys: tuple[str, ...] = ("arguments",)) -> dict[str, str]:
    """{"name", "arguments" (canonical JSON string)} from a decoded call object; raises on a malformed one."""
    name = obj["name"]
    if not isinstance(name, str):
        raise TypeError("tool name is not a string")
    args = next((obj[k] for k in args_keys if k in obj), None)
    return {"name": name, "arguments": json.dumps(canonical_arguments(args), ensure_ascii=False)}


def parse_hermes(text: str) -> Parsed:
    calls: list[dict[str, str]] = []
    invalid: list[str] = []
    for m in _CALL_RE.finditer(text):
        try:
            calls.append(_call(json.loads(m.group(1))))
        except (ValueError, KeyError, TypeError, AttributeError):
            invalid.append(m.group(1))
    content = _CALL_RE.sub("", text)
    if TOOL_CALL_OPEN in content:  # an unterminated call (generation ran out of tokens)
        content, _, rest = content.partition(TOOL_CALL_OPEN)
        invalid.append(rest)
    return content, calls, invalid


def parse_llama_json(text: str) -> Parsed:
    """Llama 3.1+: the whole turn is one JSON object `{"name": …, "parameters": {…}}` (or `arguments`)."""
    body = text.replace("<|python_tag|>", "").strip()
    if not body.startswith("{"):
        return text, [], []
    try:
        obj, _ = json.JSONDecoder().raw_decode(body)
        return "", [_call(obj, ("parameters", "arguments"))], []
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", [], [body]


def parse_mistral(text: str) -> Parsed:
    """Mistral: optional text, then `[TOOL_CALLS] [{"name": …, "arguments": {…}, "id": …}, …]`. Decoding with
    special tokens skipped loses the marker; a turn that *is* a JSON list of calls still reads as calls."""
    content, marker, rest = text.partition(MISTRAL_CALLS)
    if not marker:
        if not text.strip().startswith("[{"):
            return text, [], []
        content, rest = "", text
    try:
        items, _ = json.JSONDecoder().raw_decode(rest.strip())
        return content, [_call(i) for i in (items if isinstance(items, list) else [items])], []
    except (ValueError, KeyError, TypeError, AttributeError):
        return content, [], [rest.strip()]


PARSERS: dict[str, Callable[[str], Parsed]] = {"hermes": parse_hermes, "llama_json": parse_llama_json,
                                               "mistral": parse_mistral}


def _guess_parser(text: str) -> str:
    if TOOL_CALL_OPEN in text:
        return "hermes"
    if MISTRAL_CALLS in text or text.strip().startswith("[{"):
        return "mistral"
    return "llama_json" if text.replace("<|python_tag|>", "").strip().startswith("{") else "hermes"


def parse_assistant_output(text: str, family: ChatFamily | None = None,
                           end_markers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A generated assistant turn back as a message: content, tool calls (arguments as a canonical JSON
    string, like the schema) and reasoning. Text after the first end marker (the family's, `end_markers`,
    or any known family's when no family is given) is ignored; calls whose JSON does not parse are listed
    under `invalid_tool_calls` rather than raising."""
    ends = (*(family.end_markers if family else ALL_END_MARKERS), *end_markers)
    cut = min((i for i in (text.find(e) for e in ends if e) if i >= 0), default=len(text))
    text = text[:cut]
    for token in CONTROL_TOKENS:
        text = text.replace(token, "")
    reasoning = "".join(m.group(1).strip("\n") for m in _THINK_RE.finditer(text)) or None
    text = _THINK_RE.sub("", text)
    content, calls, invalid = PARSERS[family.parser if family else _guess_parser(text)](text)
    return {"role": "assistant", "content": content.strip() or None, "tool_calls": calls,
            "reasoning": reasoning, "invalid_tool_calls": invalid}


def count_tool_calls(rendered: str) -> int:
    """Tool calls already made in a rendered prompt, whatever the family's format (GRPO rewards score
    the next call, so they need its index)."""
    n = rendered.count(TOOL_CALL_OPEN)
    for chunk in rendered.split(MISTRAL_CALLS)[1:]:
        try:
            items, _ = json.JSONDecoder().raw_decode(chunk.strip())
            n += len(items) if isinstance(items, list) else 1
        except ValueError:
            n += 1
    return n + rendered.count('<|end_header_id|>\n\n{"name": ')
