"""The policies online evaluation puts to work: a saved checkpoint generating greedy turns in its own chat
template, loaded once and cached; one call per turn (`ModelPolicy.__call__`) or all open episodes at once
(`ModelPolicy.batch`, what `run_episodes` drives: one batched `generate` per round). On a CUDA machine with
`vllm` installed, the turns come from a vLLM engine instead (`pipeline.evaluate.vllm_policy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.chat.generate import greedy_turns
from pipeline.config import TURN_TOKENS
from pipeline.environment import DEFAULT_ENVIRONMENT, Environment, load_environment
from pipeline.train.devices import generation_backend, machine_facts

_MODEL_CACHE: dict[tuple[str, str, float], tuple[Any, Any]] = {}


def _load(checkpoint_dir: str | Path, device: str) -> tuple[Any, Any]:
    """(model, tokenizer), cached per path, device and weights mtime: a rollout calls the model once
    per step, and reloading per task would cost more than generating. A rewritten checkpoint reloads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(checkpoint_dir).resolve()
    stamp = max((p.stat().st_mtime for p in path.glob("*.safetensors")), default=0.0)
    key = (str(path), device, stamp)
    if key not in _MODEL_CACHE:
        if len(_MODEL_CACHE) >= 2:  # a base/previous/current comparison holds at most two at once
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar per evaluation in pipeline logs
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        _MODEL_CACHE[key] = (model, tokenizer)
    return _MODEL_CACHE[key]


@dataclass
class Turn:
    """What the policy saw and wrote for one assistant turn (telemetry for the captured trajectory)."""

    input_tokens: int
    output_tokens: int
    latency_ms: float
    finish_reason: str  # "stop" (end marker), "length" (ran out of tokens)
    invalid: bool  # unparseable/unterminated tool call, or an empty turn
    truncated_prompt: bool


@dataclass
class ModelPolicy:
    """Greedy policy of a causal LM in its own chat template (tool calls parsed in its family's format).
    Stateless between calls (the model sees only the messages), so one instance serves every task. As a
    plain policy it logs each call in `turns`; as a batched one (`batch`, for `run_episodes`) it answers all
    open episodes in one `generate` and logs each episode's turns under its index in `episode_turns`."""

    model: Any
    tokenizer: Any
    name: str
    max_new_tokens: int = TURN_TOKENS
    tools: list[dict[str, Any]] | None = None
    turns: list[Turn] = field(default_factory=list)
    episode_turns: dict[int, list[Turn]] = field(default_factory=dict)
    engine: Callable[..., list[Any]] | None = None  # a vLLM engine (`VllmTurns`) on a GPU that has it, else HF generate

    def _generate(self, conversations: Sequence[list[dict[str, Any]]]) -> list[tuple[Turn, dict[str, Any]]]:
        out = (self.engine(conversations, self.tools) if self.engine is not None
               else greedy_turns(self.model, self.tokenizer, conversations, self.tools, self.max_new_tokens))
        return [(Turn(g.prompt_tokens, g.new_tokens, g.ms, "stop" if g.ended else "length", g.invalid, g.truncated),
                 g.message) for g in out]

    def __call__(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        turn, message = self._generate([messages])[0]
        self.turns.append(turn)
        return message

    def batch(self, indices: Sequence[int], conversations: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        replies = []
        for i, (turn, message) in zip(indices, self._generate(conversations), strict=True):
            self.episode_turns.setdefault(i, []).append(turn)
            replies.append(message)
        return replies


def model_policy(checkpoint_dir: str | Path, *, max_new_tokens: int = TURN_TOKENS, tools_in_prompt: bool = False,
                 device: str = "auto", environment: Environment | str = DEFAULT_ENVIRONMENT) -> ModelPolicy:
    """A rollout policy backed by a saved HF checkpoint (loaded once, cached). `tools_in_prompt` must
    match how the corpus rendered training sequences (`CorpusSpec.tools_in_prompt`), or the model sees
    prompts unlike anything it was trained on; the tools shown are the environment's."""
    env = load_environment(environment) if isinstance(environment, str) else environment
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tools = env.tools if tools_in_prompt else None
    if generation_backend(device, machine_facts()) == "vllm":
        from transformers import AutoTokenizer

        from pipeline.evaluate.vllm_policy import VllmTurns

        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        return ModelPolicy(None, tokenizer, Path(checkpoint_dir).name, max_new_tokens, tools,
                           engine=VllmTurns(checkpoint_dir, tokenizer, max_new_tokens))
    model, tokenizer = _load(checkpoint_dir, device)
    return ModelPolicy(model, tokenizer, Path(checkpoint_dir).name, max_new_tokens, tools)
