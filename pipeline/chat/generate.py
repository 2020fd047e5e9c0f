"""One greedy assistant turn of a causal LM in its own chat template, parsed back into a message.

Why here: online evaluation's policy and GRPO's episode continuation both need exactly this (the
prompt in the model's template, its stop tokens, its family's tool-call parser); one function keeps
the two from drifting apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipeline.chat.masks import tokenize_prompt
from pipeline.chat.parse import parse_assistant_output
from pipeline.chat.render import end_markers, family_of, stop_token_ids


@dataclass(frozen=True)
class GeneratedTurn:
    """The parsed message and what it cost: prompt and new tokens, milliseconds, whether generation
    stopped on an end marker, whether the turn is unusable, and whether the prompt was cut to fit."""

    message: dict[str, Any]
    prompt_tokens: int
    new_tokens: int
    ms: float
    ended: bool
    invalid: bool
    truncated: bool


def greedy_turn(model: Any, tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                max_new_tokens: int) -> GeneratedTurn:
    """Generate the next assistant turn greedily, without gradient; the prompt keeps its most recent
    tokens when it would not fit the model's context with `max_new_tokens` more."""
    import torch

    prompt = tokenize_prompt(tokenizer, messages, tools)
    keep = (getattr(model.config, "max_position_embeddings", None) or 1 << 30) - max_new_tokens
    truncated = len(prompt) > keep
    prompt = prompt[-keep:] if truncated else prompt
    stop = stop_token_ids(tokenizer)
    pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, stop[0]) if t is not None)
    device = next(model.parameters()).device
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt], device=device),
                             attention_mask=torch.ones((1, len(prompt)), dtype=torch.long, device=device),
                             do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad)
    new = out[0, len(prompt):].tolist()
    text = tokenizer.decode(new, skip_special_tokens=False)
    ends = end_markers(tokenizer)
    parsed = parse_assistant_output(text, family_of(tokenizer), ends)
    ended = any(e in text for e in ends) or (bool(new) and new[-1] in stop)
    invalid = bool(parsed["invalid_tool_calls"]) or not (parsed["content"] or parsed["tool_calls"])
    return GeneratedTurn({"content": parsed["content"], "tool_calls": parsed["tool_calls"]}, len(prompt), len(new),
                         (time.perf_counter() - started) * 1000, ended, invalid or not ended, truncated)
