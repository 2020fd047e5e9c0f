"""The chat-template families tracemill knows: one record each, saying how to recognise the family's
template, where a generated turn ends, how its tool calls are written (so they can be parsed back),
and, where the model's own template silently drops tools, the family's documented convention to use.

Why a registry and not `if model == …`: a corpus is rendered with whatever template the base model's
tokenizer carries; the family only matters for the parts a template does not tell us (where a turn
ends, how to read a tool call back, what to do when tools vanish). Adding a family is one record here
and, if its calls are written a new way, one parser in `pipeline.chat.parse`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pipeline.chat.tracemill import CHAT_TEMPLATE as TRACEMILL_TEMPLATE

# ChatML with Hermes-style tools: the convention Qwen2.5/Qwen3 and SmolLM2's function-calling data use.
# Tool list in the system turn, `<tool_call>\n{json}\n</tool_call>` in assistant turns, results as
# `<tool_response>` blocks in a user turn (consecutive results share one turn), like Qwen2.5's template;
# the system preamble is shorter than Qwen's because every token costs on a small CPU budget.
# `{% generation %}` marks what the model writes, so masks come from `return_assistant_tokens_mask`.
HERMES_CHATML_TEMPLATE = (  # newlines are printed as {{ NL }}: transformers renders with trim_blocks
    "{%- set NL = '\n' %}"
    "{%- set sys = messages[0].content if messages and messages[0].role == 'system' else '' %}"
    "{%- if tools or sys %}{{ '<|im_start|>system' + NL + sys }}"
    "{%- if tools %}{{ (NL + NL if sys else '') + '# Tools' + NL + NL }}"
    "{{- 'You may call functions. Their signatures are within <tools></tools> XML tags:' + NL + '<tools>' }}"
    "{%- for tool in tools %}{{ NL + (tool | tojson) }}{% endfor %}"
    "{{- NL + '</tools>' + NL + NL + 'For each function call, return a json object with function name and '"
    " 'arguments within <tool_call></tool_call> XML tags:' + NL + '<tool_call>' + NL }}"
    "{{- '{\"name\": <function-name>, \"arguments\": <args-json-object>}' + NL + '</tool_call>' }}{% endif %}"
    "{{- '<|im_end|>' + NL }}{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'assistant' %}{{ '<|im_start|>assistant' + NL }}{% generation %}"
    "{%- if message.reasoning_content %}{{ '<think>' + NL + message.reasoning_content + NL + '</think>' + NL + NL }}"
    "{%- endif %}"
    "{%- if message.content %}{{ message.content }}{% endif %}"
    "{%- for call in message.tool_calls or [] %}{% set c = call.function if call.function is defined else call %}"
    "{%- if message.content or not loop.first %}{{ NL }}{% endif %}"
    "{{- '<tool_call>' + NL + '{\"name\": ' + (c.name | tojson) + ', \"arguments\": ' }}"
    "{{- (c.arguments | tojson if c.arguments is not string else c.arguments) + '}' + NL + '</tool_call>' }}"
    "{%- endfor %}{{ '<|im_end|>' }}{% endgeneration %}{{ NL }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or loop.previtem.role != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{- NL + '<tool_response>' + NL + message.content + NL + '</tool_response>' }}"
    "{%- if loop.last or loop.nextitem.role != 'tool' %}{{ '<|im_end|>' + NL }}{% endif %}"
    "{%- else %}{{ '<|im_start|>' + message.role + NL + message.content + '<|im_end|>' + NL }}{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant' + NL }}{% endif %}"
)


def _mistral_call_id(cid: str) -> str:
    """Mistral's template raises unless a call id is 9 alphanumeric characters: map others stably."""
    return cid if len(cid) == 9 and cid.isalnum() else hashlib.sha1(cid.encode()).hexdigest()[:9]


@dataclass(frozen=True)
class ChatFamily:
    """How one family of chat templates is recognised, ends a turn, writes tool calls, and falls back."""

    name: str
    markers: tuple[str, ...]  # all present in a template string → this family
    end_markers: tuple[str, ...]  # where a generated assistant turn ends (also its stop tokens)
    parser: str  # a key of pipeline.chat.parse.PARSERS: how its tool calls are written
    headers: tuple[str, ...] = ()  # text right before an assistant body (where the model starts writing)
    fallback_template: str | None = None  # the family convention, when the model's template drops tools
    call_id: object = field(default=str)  # how tool-call ids must look to its template

    def matches(self, template: str) -> bool:
        return all(m in template for m in self.markers)


TRACEMILL = ChatFamily("tracemill", ("<|assistant|>", "<|end|>"), ("<|end|>",), "hermes", ("<|assistant|>",))
LLAMA3 = ChatFamily("llama3-json", ("<|start_header_id|>", "<|eot_id|>"), ("<|eot_id|>", "<|eom_id|>"), "llama_json",
                    ("<|start_header_id|>assistant<|end_header_id|>\n\n",))
MISTRAL = ChatFamily("mistral-tool-calls", ("[INST]",), ("</s>",), "mistral", ("[/INST]", "[/TOOL_RESULTS]"),
                     call_id=_mistral_call_id)
CHATML = ChatFamily("chatml-hermes", ("<|im_start|>",), ("<|im_end|>",), "hermes", ("<|im_start|>assistant\n",),
                    HERMES_CHATML_TEMPLATE)
GENERIC = ChatFamily("generic", (), (), "hermes")  # unknown template: Hermes tags, the eos token ends a turn
FAMILIES: tuple[ChatFamily, ...] = (TRACEMILL, LLAMA3, MISTRAL, CHATML)
ALL_END_MARKERS: tuple[str, ...] = tuple(dict.fromkeys(m for f in FAMILIES for m in f.end_markers))
# Control tokens of the known families: never part of parsed content (decoding may keep them).
CONTROL_TOKENS: tuple[str, ...] = ("<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|tools|>",
                                   "<|im_start|>", "<|endoftext|>", "<|begin_of_text|>", "<|python_tag|>",
                                   "<|start_header_id|>", "<|end_header_id|>", "<s>", "[INST]", "[/INST]")


def detect_family(template: str | None) -> ChatFamily:
    """The first family whose markers all appear in the template; GENERIC when none does."""
    return next((f for f in FAMILIES if template and f.matches(template)), GENERIC)


def family_named(name: str) -> ChatFamily:
    for f in (*FAMILIES, GENERIC):
        if f.name == name:
            return f
    raise ValueError(f"unknown chat family {name!r}: one of {[f.name for f in (*FAMILIES, GENERIC)]}")


__all__ = ["ALL_END_MARKERS", "CHATML", "CONTROL_TOKENS", "FAMILIES", "GENERIC", "HERMES_CHATML_TEMPLATE", "LLAMA3",
           "MISTRAL", "TRACEMILL", "TRACEMILL_TEMPLATE", "ChatFamily", "detect_family", "family_named"]
