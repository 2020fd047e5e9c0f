"""Greedy assistant turns of a causal LM in its own chat template, parsed back into messages.

Why here: online evaluation's policy and GRPO's episode continuation both need exactly this (the
prompt in the model's template, its stop tokens, its family's tool-call parser); one function keeps
the two from drifting apart. Why batched: an evaluation advances every open episode by one turn at a
time, so all their prompts go through one `generate` call (left-padded, KV cache within the turn, each
row stopping at its end-of-turn token) instead of one call per episode (`bench/online_eval.py`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.chat.masks import tokenize_prompt
from pipeline.chat.parse import parse_assistant_output
from pipeline.chat.render import end_markers, family_of, stop_token_ids


@dataclass(frozen=True)
class GeneratedTurn:
    """The parsed message and what it cost: prompt and new tokens, milliseconds (the batch's, shared
    by its rows), whether generation stopped on an end marker, whether the turn is unusable, and
    whether the prompt was cut to fit."""

    message: dict[str, Any]
    prompt_tokens: int
    new_tokens: int
    ms: float
    ended: bool
    invalid: bool
    truncated: bool


def _pad_id(tokenizer: Any, stop: list[int]) -> int:
    return next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, *stop) if t is not None)


def prompt_ids(tokenizer: Any, conversations: Sequence[list[dict[str, Any]]], tools: list[dict[str, Any]] | None,
               keep: int) -> list[tuple[list[int], bool]]:
    """Each conversation's generation prompt in the model's template, cut to its last `keep` tokens (and
    whether it was cut): what any generation backend is given."""
    prompts = [tokenize_prompt(tokenizer, messages, tools) for messages in conversations]
    return [(p[-keep:], len(p) > keep) for p in prompts]


@dataclass(frozen=True)
class TurnFormat:
    """Where a tokenizer's generated turn ends and how its tool calls are written: worked out once per batch
    (or engine), not per generated row."""

    stop: list[int]
    ends: tuple[str, ...]
    family: Any

    @classmethod
    def of(cls, tokenizer: Any) -> TurnFormat:
        return cls(stop_token_ids(tokenizer), end_markers(tokenizer), family_of(tokenizer))


def parse_turn(tokenizer: Any, fmt: TurnFormat, new: list[int], prompt_tokens: int, ms: float,
               truncated: bool) -> GeneratedTurn:
    """Generated ids → the turn: cut after the first stop token, decoded, tool calls parsed in the family's
    format. Shared by every backend (HF `generate` here, vLLM in `pipeline.evaluate.vllm_policy`)."""
    stop, ends = fmt.stop, fmt.ends
    new = new[:next((i + 1 for i, t in enumerate(new) if t in stop), len(new))]
    text = tokenizer.decode(new, skip_special_tokens=False)
    parsed = parse_assistant_output(text, fmt.family, ends)
    ended = any(e in text for e in ends) or (bool(new) and new[-1] in stop)
    invalid = bool(parsed["invalid_tool_calls"]) or not (parsed["content"] or parsed["tool_calls"])
    return GeneratedTurn({"content": parsed["content"], "tool_calls": parsed["tool_calls"]}, prompt_tokens, len(new),
                         ms, ended, invalid or not ended, truncated)


def greedy_turns(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, Any]]],
                 tools: list[dict[str, Any]] | None, max_new_tokens: int, batch_size: int = 32) -> list[GeneratedTurn]:
    """The next assistant turn of every conversation, greedily and without gradient, `batch_size`
    prompts per `generate` call. A prompt keeps its most recent tokens when it would not fit the
    model's context with `max_new_tokens` more. Rows are left-padded, so every row's new tokens start
    at the same column; a row that hits a stop token is padded from there on by `generate`."""
    import torch

    fmt = TurnFormat.of(tokenizer)
    stop = fmt.stop
    pad = _pad_id(tokenizer, stop)
    keep = (getattr(model.config, "max_position_embeddings", None) or 1 << 30) - max_new_tokens
    device = next(model.parameters()).device
    prompts = prompt_ids(tokenizer, conversations, tools, keep)
    turns: list[GeneratedTurn] = []
    for lo in range(0, len(prompts), batch_size):
        chunk = prompts[lo:lo + batch_size]
        width = max(len(p) for p, _ in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p, _ in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in chunk], device=device)
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=stop, pad_token_id=pad)
        ms = (time.perf_counter() - started) * 1000
        for row, (prompt, truncated) in enumerate(chunk):
            turns.append(parse_turn(tokenizer, fmt, out[row, width:].tolist(), len(prompt), ms, truncated))
    return turns


def greedy_turn(model: Any, tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                max_new_tokens: int) -> GeneratedTurn:
    """One conversation's next assistant turn (a batch of one)."""
    return greedy_turns(model, tokenizer, [messages], tools, max_new_tokens)[0]
