"""Corpus rows → TRL's standard text columns (`prompt`, `chosen`/`rejected`, `completion`), rendered by
`pipeline.chat_format`, for the trainers that tokenize text themselves (DPO, KTO, GRPO).

Why text, not pre-tokenized ids: TRL 1.16's DPO/KTO trainers always (re)tokenize `prompt` + completion
columns themselves. The prompt ends with the assistant header, the completion is the rest of the
conversation (assistant bodies, `<|end|>`, tool turns). Our tokenizer adds no BOS/EOS of its own and every
completion already ends with `<|end|>` (= EOS), so TRL's "add EOS" step adds nothing, and because the prompt
ends on a special token, the prompt/completion split is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.chat_format import ASSISTANT, render_prompt, render_segments


def _messages(value: Any) -> list[dict[str, Any]]:
    """Message lists arrive as JSON strings (corpus rows) or already decoded."""
    if isinstance(value, bytes | str):
        value = json.loads(value or "[]")
    return list(value or [])


def prompt_text(prompt: Any, tools: Any = None) -> str:
    """The prompt (tool list, system, user…) up to and including the assistant header."""
    return render_prompt(_messages(prompt), _messages(tools) or None)


def completion_text(completion: Any) -> str:
    """What follows the prompt's assistant header: the first assistant body, then any tool turns and
    later assistant turns. Raises ValueError when the completion does not start with an assistant turn."""
    segments = render_segments(_messages(completion))
    if len(segments) < 2 or segments[0][0] != ASSISTANT:
        raise ValueError("a completion must start with an assistant message")
    return "".join(text for text, _ in segments[1:])


def dpo_dataset(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, str]], int]:
    """`prompt/chosen/rejected` text rows; pairs that cannot be rendered or are identical are skipped."""
    out, skipped = [], 0
    for row in rows:
        try:
            item = {"prompt": prompt_text(row["prompt"], row.get("tools")),
                    "chosen": completion_text(row["chosen"]), "rejected": completion_text(row["rejected"])}
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if item["chosen"] == item["rejected"]:
            skipped += 1
            continue
        out.append(item)
    return out, skipped


def kto_dataset(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """`prompt/completion/label` text rows; rows that cannot be rendered are skipped."""
    out, skipped = [], 0
    for row in rows:
        try:
            out.append({"prompt": prompt_text(row["prompt"], row.get("tools")),
                        "completion": completion_text(row["completion"]), "label": bool(row["label"])})
        except (ValueError, KeyError, TypeError):
            skipped += 1
    return out, skipped
