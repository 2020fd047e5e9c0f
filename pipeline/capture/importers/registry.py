"""The format registry: name → how to recognise a record and how to convert a file.

Order matters: detection tries formats top to bottom and the first `sniff` that accepts the file's
first record wins, so container formats with unmistakable keys come first (the coding-agent session
formats, whose records carry tool-specific keys, lead), message lists that need a telling detail
(mini-swe-agent's action block, an Agents SDK list's typed function calls) come before the formats
they resemble, and the permissive OpenAI chat shape (a `messages` list) comes last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.capture.importers import (
    agents_sdk,
    aider,
    anthropic,
    claude_code,
    claude_managed,
    codex,
    gemini_cli,
    inspect_ai,
    langfuse,
    langsmith,
    mini_swe_agent,
    openai,
    openhands,
    otlp,
    parts,
    sharegpt,
    swe_agent,
    tau,
    toolbench,
)
from pipeline.capture.importers.base import Context, Item
from pipeline.capture.importers.source import Source


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    sniff: Callable[[Any], bool]
    convert: Callable[[Source, Context], Iterator[Item]]


_ALL = [
    Format("claude_code", "Claude Code session JSONL (~/.claude/projects); subagents and sidechains linked",
           claude_code.sniff, claude_code.convert),
    Format("codex", "Codex CLI rollout JSONL (~/.codex/sessions), enveloped and pre-Aug-2025 layouts",
           codex.sniff, codex.convert),
    Format("gemini_cli", "Gemini CLI chat recordings {sessionId, projectHash, messages} incl. toolCalls",
           gemini_cli.sniff, gemini_cli.convert),
    Format("openhands", "OpenHands event-stream trajectories (actions, observations, finish)", openhands.sniff,
           openhands.convert),
    Format("inspect_ai", "Inspect AI eval logs (JSON, v2): each sample a trajectory, scores as outcomes",
           inspect_ai.sniff, inspect_ai.convert),
    Format("langsmith", "LangSmith run payloads {post, patch} or run lists; feedback as outcomes",
           langsmith.sniff, langsmith.convert),
    Format("claude_managed_agents", "Claude Managed Agents session recordings [sdk method, payload] JSONL",
           claude_managed.sniff, claude_managed.convert),
    Format("aider", "aider .aider.chat.history.md (Markdown): sessions of user and assistant turns",
           aider.sniff, aider.convert),
    Format("otlp_json", "OTLP JSON traces (resourceSpans/scopeSpans/spans): GenAI semconv, OpenInference",
           otlp.sniff, otlp.convert),
    Format("langfuse", "Langfuse trace export {trace, observations}; scores become outcomes",
           langfuse.sniff, langfuse.convert),
    Format("tau2", "tau2-bench Results {info, tasks, simulations} (or one simulation)", tau.sniff_tau2,
           tau.convert_tau2),
    Format("swe_agent", "SWE-agent .traj, 1.x function calling and 0.x legacy", swe_agent.sniff, swe_agent.convert),
    Format("toolbench", "ToolBench DFS answer trees (answer_generation.train_messages)", toolbench.sniff,
           toolbench.convert),
    Format("tau_bench", "tau-bench v1 results [{task_id, reward, info, traj, trial}]", tau.sniff_tau_bench,
           tau.convert_tau_bench),
    Format("tau_bench_fewshot", "tau-bench few-shot display strings {messages_display}", tau.sniff_tau_fewshot,
           tau.convert_tau_fewshot),
    Format("sharegpt", "ShareGPT {conversations[{from, value}]} incl. LLaMA-Factory function_call/observation",
           sharegpt.sniff_sharegpt, sharegpt.convert_sharegpt),
    Format("llamafactory_v1", "LLaMA-Factory v1 typed messages {messages[{role, content[{type, value}]}]}",
           sharegpt.sniff_llamafactory, sharegpt.convert_llamafactory),
    Format("otel_genai_messages", "OTel GenAI message arrays [{role, parts[...]}]", parts.sniff_otel_messages,
           parts.convert_otel_messages),
    Format("anthropic_messages", "Anthropic Messages {system, messages[{role, content blocks}], tools}",
           anthropic.sniff, anthropic.convert),
    Format("mini_swe_agent", "mini-swe-agent trajectories (message lists with mswea_bash_command actions)",
           mini_swe_agent.sniff, mini_swe_agent.convert),
    Format("openai_agents_input", "OpenAI Agents SDK input lists (to_input_list: untyped first message, "
           "then Responses items)", agents_sdk.sniff, agents_sdk.convert),
    Format("openai_responses", "OpenAI Responses API items (message, function_call, function_call_output, "
           "reasoning) or Response objects", openai.sniff_responses, openai.convert_responses),
    Format("openai_chat", "OpenAI chat / fine-tuning JSONL {messages, tools} incl. preference fine-tuning",
           openai.sniff_chat, openai.convert_chat),
]

FORMATS: dict[str, Format] = {f.name: f for f in _ALL}
