"""Online evaluation's turns through vLLM, on a GPU where the `vllm` package is installed.

Why: an evaluation advances every open episode one turn per round; vLLM's paged KV cache and continuous
batching make that round several times cheaper than HF `generate` on a GPU. The prompts (the model's own
template, cut to fit) and the parsing of what comes back (`pipeline.chat.generate.parse_turn`) are the same
as the HF path's, so the two backends differ only in speed. Greedy (temperature 0), so the numbers match
the HF path's up to kernel arithmetic. `pipeline.train.devices.generation_backend` decides; this module is
imported only when it says "vllm" (nothing here runs on a CPU machine).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.chat.generate import GeneratedTurn, TurnFormat, parse_turn, prompt_ids

GPU_MEMORY_SHARE = 0.5  # of the card: the rest stays free for the trainer or a second model (base vs checkpoint)


class VllmTurns:
    """A vLLM engine over a saved checkpoint, answering batches of conversations with greedy turns."""

    def __init__(self, checkpoint_dir: str | Path, tokenizer: Any, max_new_tokens: int):
        from vllm import LLM, SamplingParams

        self.tokenizer, self.max_new_tokens = tokenizer, max_new_tokens
        self.fmt = TurnFormat.of(tokenizer)
        self.stop = self.fmt.stop
        self.llm = LLM(model=str(checkpoint_dir), gpu_memory_utilization=GPU_MEMORY_SHARE, seed=0)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=self.stop,
                                     skip_special_tokens=False)
        self.max_len = int(self.llm.llm_engine.model_config.max_model_len)

    def __call__(self, conversations: Sequence[list[dict[str, Any]]],
                 tools: list[dict[str, Any]] | None) -> list[GeneratedTurn]:
        prompts = prompt_ids(self.tokenizer, conversations, tools, self.max_len - self.max_new_tokens)
        started = time.perf_counter()
        outputs = self.llm.generate([{"prompt_token_ids": p} for p, _ in prompts], self.params, use_tqdm=False)
        ms = (time.perf_counter() - started) * 1000
        turns = []
        for out, (prompt, truncated) in zip(outputs, prompts, strict=True):
            new = list(out.outputs[0].token_ids)
            if out.outputs[0].finish_reason == "stop" and self.stop and (not new or new[-1] not in self.stop):
                new.append(self.stop[0])  # vLLM may leave the stop token out: the turn did end
            turns.append(parse_turn(self.tokenizer, self.fmt, new, len(prompt), ms, truncated))
        return turns
