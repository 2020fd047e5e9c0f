"""Loss only on the policy's tokens in a preference completion.

TRL puts the loss on the *whole* completion, tool results included. In a multi-turn completion those tokens
are the environment's, not the policy's, so `ToolTurnMasking` wraps TRL's collator and zeroes them (and the
assistant headers) in `completion_mask`, which gives the same mask as `chat.tracemill.render_segments`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.chat.tracemill import ASSISTANT, END


def assistant_only(input_ids: Any, completion_mask: Any, assistant_id: int, end_id: int) -> Any:
    """`completion_mask` restricted to assistant bodies (their `<|end|>` included). A completion starts inside
    a body; a token is the policy's when the last marker (header or end) before it is a header (or none)."""
    import torch

    inside = completion_mask.bool()
    is_hdr = (input_ids == assistant_id) & inside
    marker = is_hdr | ((input_ids == end_id) & inside)
    pos = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
    last = torch.where(marker, pos, torch.full_like(pos, -1)).cummax(dim=1).values
    prev = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], dim=1)  # last marker strictly before
    prev_is_hdr = torch.where(prev >= 0, is_hdr.gather(1, prev.clamp(min=0)), torch.ones_like(inside))
    return (inside & prev_is_hdr & ~is_hdr).to(completion_mask.dtype)


@dataclass
class ToolTurnMasking:
    """Wraps a TRL preference collator; drops tool-turn tokens from `completion_mask` (and `KL_completion_mask`)."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]
    assistant_id: int
    end_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        for prefix in ("", "KL_"):
            if f"{prefix}completion_mask" in batch:
                batch[f"{prefix}completion_mask"] = assistant_only(
                    batch[f"{prefix}input_ids"], batch[f"{prefix}completion_mask"], self.assistant_id, self.end_id)
        return batch


def marker_ids(tokenizer: Any) -> tuple[int, int] | None:
    """(assistant header id, end id) when both are single tokens, i.e. the tokenizer speaks our format."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (ASSISTANT, END)]
    return (ids[0][0], ids[1][0]) if all(len(i) == 1 for i in ids) else None
