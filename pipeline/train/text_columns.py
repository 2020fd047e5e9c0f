"""Corpus rows → TRL's standard text columns (`prompt`, `chosen`/`rejected`, `completion`), rendered with the
base model's own chat template (`pipeline.chat`), for the trainers that tokenize text themselves (DPO, KTO, GRPO).
Without a tokenizer the text is tracemill's own format, which is what the tiny model's template renders.

Why text, not pre-tokenized ids: TRL 1.16's DPO/KTO trainers always (re)tokenize `prompt` + completion
columns themselves. The prompt ends with the assistant header, the completion is the rest of the
conversation (assistant bodies, their end markers, tool turns), cut after its last end marker (so ChatML's
trailing newline is not there for TRL to append an EOS after). With tracemill's format every completion
ends with `<|end|>` (= EOS), so TRL's "add EOS" step adds nothing, and because the prompt ends on a special
token, the prompt/completion split is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.chat import end_markers, render_prompt, render_text
from pipeline.chat.tracemill import ASSISTANT, render_segments
from pipeline.chat.tracemill import render_prompt as tracemill_prompt


def _messages(value: Any) -> list[dict[str, Any]]:
    """Message lists arrive as JSON strings (corpus rows) or already decoded."""
    if isinstance(value, bytes | str):
        value = json.loads(value or "[]")
    return list(value or [])


def prompt_text(prompt: Any, tools: Any = None, tokenizer: Any = None) -> str:
    """The prompt (tool list, system, user…) up to and including the assistant header."""
    if tokenizer is None:
        return tracemill_prompt(_messages(prompt), _messages(tools) or None)
    return render_prompt(tokenizer, _messages(prompt), _messages(tools) or None)


def completion_text(completion: Any, tokenizer: Any = None, prompt: Any = None, tools: Any = None) -> str:
    """What follows the prompt's assistant header: the first assistant body, then any tool turns and
    later assistant turns. Raises ValueError when the completion does not start with an assistant turn
    (or, with a tokenizer, when its template renders the prompt differently once a turn follows)."""
    messages = _messages(completion)
    if not messages or messages[0].get("role") != "assistant":
        raise ValueError("a completion must start with an assistant message")
    if tokenizer is None:
        segments = render_segments(messages)
        if len(segments) < 2 or segments[0][0] != ASSISTANT:
            raise ValueError("a completion must start with an assistant message")
        return "".join(text for text, _ in segments[1:])
    head, tools = _messages(prompt), _messages(tools) or None
    full, start = render_text(tokenizer, head + messages, tools), render_prompt(tokenizer, head, tools)
    if not full.startswith(start):
        raise ValueError("the chat template renders this prompt differently once a completion follows")
    rest = full[len(start):]
    cut = max((i + len(e) for e in end_markers(tokenizer) if (i := rest.rfind(e)) >= 0), default=len(rest))
    return rest[:cut]


def dpo_dataset(rows: Iterable[Mapping[str, Any]], tokenizer: Any = None) -> tuple[list[dict[str, str]], int]:
    """`prompt/chosen/rejected` text rows; pairs that cannot be rendered or are identical are skipped."""
    out, skipped = [], 0
    for row in rows:
        try:
            p, t = row["prompt"], row.get("tools")
            item = {"prompt": prompt_text(p, t, tokenizer), "chosen": completion_text(row["chosen"], tokenizer, p, t),
                    "rejected": completion_text(row["rejected"], tokenizer, p, t)}
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if item["chosen"] == item["rejected"]:
            skipped += 1
            continue
        out.append(item)
    return out, skipped


def kto_dataset(rows: Iterable[Mapping[str, Any]], tokenizer: Any = None) -> tuple[list[dict[str, Any]], int]:
    """`prompt/completion/label` text rows; rows that cannot be rendered are skipped."""
    out, skipped = [], 0
    for row in rows:
        try:
            p, t = row["prompt"], row.get("tools")
            out.append({"prompt": prompt_text(p, t, tokenizer), "completion": completion_text(row["completion"], tokenizer, p, t),
                        "label": bool(row["label"])})
        except (ValueError, KeyError, TypeError):
            skipped += 1
    return out, skipped
