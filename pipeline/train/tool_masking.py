"""Loss only on the policy's tokens in a preference completion.

TRL puts the loss on the *whole* completion, tool results included. In a multi-turn completion those tokens
are the environment's, not the policy's, so `ToolTurnMasking` wraps TRL's collator and zeroes them (and the
assistant headers) in `completion_mask`, which gives the same mask as `pipeline.chat.tokenize_conversation`.
Markers come from the tokenizer's chat family (`ChatFamily.headers` / `end_markers`): a header may be several
tokens (ChatML's `<|im_start|>assistant\\n`); its last token is what opens a body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.chat import family_of


def _ends_of(input_ids: Any, seqs: Sequence[Sequence[int]]) -> Any:
    """Boolean tensor: True where one of the id sequences ends."""
    import torch

    hit = torch.zeros_like(input_ids, dtype=torch.bool)
    for seq in seqs:
        n = len(seq)
        if not n or n > input_ids.size(1):
            continue
        match = torch.ones_like(input_ids[:, n - 1:], dtype=torch.bool)
        for j, tok in enumerate(seq):
            match &= input_ids[:, j:input_ids.size(1) - n + 1 + j] == tok
        hit[:, n - 1:] |= match
    return hit


def assistant_only(input_ids: Any, completion_mask: Any, assistant_id: int | Sequence[Sequence[int]],
                   end_id: int | Sequence[int]) -> Any:
    """`completion_mask` restricted to assistant bodies (their end marker included). A completion starts inside
    a body; a token is the policy's when the last marker (header end or end) before it is a header (or none).
    Markers are single ids (tracemill's format) or id sequences (headers) / several end ids."""
    import torch

    headers = [[assistant_id]] if isinstance(assistant_id, int) else assistant_id
    ends = [end_id] if isinstance(end_id, int) else list(end_id)
    inside = completion_mask.bool()
    is_hdr = _ends_of(input_ids, headers) & inside
    is_end = torch.zeros_like(inside)
    for e in ends:
        is_end |= input_ids == e
    marker = is_hdr | (is_end & inside)
    pos = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
    last = torch.where(marker, pos, torch.full_like(pos, -1)).cummax(dim=1).values
    prev = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], dim=1)  # last marker strictly before
    prev_is_hdr = torch.where(prev >= 0, is_hdr.gather(1, prev.clamp(min=0)), torch.ones_like(inside))
    return (inside & prev_is_hdr & ~is_hdr).to(completion_mask.dtype)


@dataclass
class ToolTurnMasking:
    """Wraps a TRL preference collator; drops tool-turn tokens from `completion_mask` (and `KL_completion_mask`)."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    assistant_id: int | Sequence[Sequence[int]]
    end_id: int | Sequence[int]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        for prefix in ("", "KL_"):
            if f"{prefix}completion_mask" in batch:
                batch[f"{prefix}completion_mask"] = assistant_only(
                    batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"], self.assistant_id, self.end_id)
        return batch


def _header_ids(tokenizer: Any, header: str) -> list[int] | None:
    """The header's ids as they appear before a body (tokenized with text after it, so a trailing newline
    is cut as in context); None when a token straddles the header's end."""
    enc = tokenizer(header + "x{", add_special_tokens=False, return_offsets_mapping=True)
    ids = [i for i, (s, _) in zip(enc["input_ids"], enc["offset_mapping"], strict=True) if s < len(header)]
    ends = [e for s, e in enc["offset_mapping"] if s < len(header)]
    return ids if ids and ends[-1] == len(header) else None


def marker_ids(tokenizer: Any) -> tuple[list[list[int]], list[int]] | None:
    """(header id sequences, end ids) of the tokenizer's chat family, or None when they cannot be located
    exactly (then TRL's whole-completion mask is kept)."""
    family = family_of(tokenizer)
    headers = [_header_ids(tokenizer, h) for h in family.headers]
    ends = [tokenizer(e, add_special_tokens=False)["input_ids"] for e in family.end_markers]
    if not headers or any(h is None for h in headers) or not ends or any(len(e) != 1 for e in ends):
        return None
    return [h for h in headers if h is not None], [e[0] for e in ends]
