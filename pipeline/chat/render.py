"""Render conversations with the base model's OWN chat template, tools included.

`chat_template_for(tokenizer)` decides, once per template string, which template a corpus is rendered
with: the tokenizer's own when it renders tool definitions, tool calls and tool results, otherwise its
family's documented convention (`ChatFamily.fallback_template`). The decision is made by rendering a
probe conversation and checking that the tool's description, the call's name and arguments and the
tool's result all appear in the text, because templates that ignore tools do so silently
(SmolLM2-Instruct's ChatML template renders an assistant tool call as an empty turn, or fails on it).
The choice is recorded (`ChatTemplate.describe()`) in the corpus lineage and in the tokenizer fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.chat.families import GENERIC, ChatFamily, detect_family
from pipeline.chat.messages import hf_messages, hf_tools

_PROBE_TOOL = {"type": "function", "function": {
    "name": "tm_probe_fn", "description": "tm_probe_description",
    "parameters": {"type": "object", "properties": {"tm_probe_arg": {"type": "string"}}}}}
_PROBE = [{"role": "user", "content": "tm probe question"},
          {"role": "assistant", "content": None, "tool_calls": [
              {"id": "tmprobe01", "name": "tm_probe_fn", "arguments": '{"tm_probe_arg": "tm_probe_value"}'}]},
          {"role": "tool", "tool_call_id": "tmprobe01", "name": "tm_probe_fn", "content": "tm_probe_result"},
          {"role": "assistant", "content": "tm probe answer"}]


class ChatTemplateError(ValueError):
    """A tokenizer whose template cannot render tool use and whose family has no convention to fall back to."""


@dataclass(frozen=True)
class ChatTemplate:
    """The template a tokenizer's corpora are rendered with, its family, and where it came from."""

    family: ChatFamily
    template: str
    source: str  # "native" (the tokenizer's own) or "fallback" (the family convention)

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:12]

    @property
    def has_generation_markers(self) -> bool:
        return "{% generation %}" in self.template or "{%- generation %}" in self.template

    def describe(self) -> dict[str, str]:
        """What the corpus lineage records: family, native or fallback, and a hash of the template text."""
        return {"family": self.family.name, "source": self.source, "sha": self.sha}

    def fingerprint(self) -> str:
        return f"{self.family.name}:{self.source}:{self.sha}"


def _apply(tokenizer: Any, template: str, messages: Sequence[Any], tools: Sequence[Any] | None,
           family: ChatFamily, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(hf_messages(messages, family.call_id), tools=hf_tools(tools),
                                         chat_template=template, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def renders_tools(tokenizer: Any, template: str, family: ChatFamily) -> bool:
    """Does this template show the model its tools, its own tool calls and their results? (A template
    that raises on the probe does not.)"""
    try:
        text = _apply(tokenizer, template, _PROBE, [_PROBE_TOOL], family, False)
    except Exception:  # noqa: BLE001  (any template error means "cannot render tool use")
        return False
    return all(s in text for s in ("tm_probe_description", "tm_probe_value", "tm_probe_result")) \
        and text.count("tm_probe_fn") >= 2


_CACHE: dict[tuple[str | None, str | None, str | None], ChatTemplate] = {}


def _resolve(template: str | None, tokenizer: Any) -> ChatTemplate:
    family = detect_family(template)
    if template and renders_tools(tokenizer, template, family):
        return ChatTemplate(family, template, "native")
    if family.fallback_template:
        return ChatTemplate(family, family.fallback_template, "fallback")
    if not template:
        raise ChatTemplateError("the base model's tokenizer has no chat_template: use an instruct model "
                                "(or set tokenizer.chat_template) before building a corpus")
    raise ChatTemplateError(f"the base model's chat template (family {family.name!r}) drops tool definitions, "
                            "tool calls or results and its family has no documented fallback: use a model "
                            "whose template supports tools")


def chat_template_for(tokenizer: Any) -> ChatTemplate:
    """The template this tokenizer's conversations are rendered with (cached per template string)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default") or next(iter(template.values()), None)
    # the probe's outcome depends on the template and the special tokens it may print, nothing else
    key = (template, getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None))
    if key not in _CACHE:
        _CACHE[key] = _resolve(template, tokenizer)
    return _CACHE[key]


def adopt_template(tokenizer: Any) -> ChatTemplate | None:
    """Make the template corpora are rendered with the tokenizer's own, so a checkpoint saved with it
    carries it (a server using the checkpoint's template then speaks the format the model was trained
    on). None, unchanged, for a tokenizer without a usable template."""
    try:
        chat = chat_template_for(tokenizer)
    except ChatTemplateError:
        return None
    tokenizer.chat_template = chat.template
    return chat


def family_of(tokenizer: Any) -> ChatFamily:
    """The tokenizer's chat family, GENERIC when it has no usable template (parsing still works)."""
    try:
        return chat_template_for(tokenizer).family
    except ChatTemplateError:
        return GENERIC


def render_text(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> str:
    """The whole conversation as the model's template writes it."""
    chat = chat_template_for(tokenizer)
    return _apply(tokenizer, chat.template, messages, tools, chat.family, False)


def render_prompt(tokenizer: Any, messages: Sequence[Any], tools: Sequence[Any] | None = None) -> str:
    """The context for generating the next assistant turn: up to and including its header."""
    chat = chat_template_for(tokenizer)
    return _apply(tokenizer, chat.template, messages, tools, chat.family, True)


def end_markers(tokenizer: Any) -> tuple[str, ...]:
    """Strings that end a generated assistant turn: the family's, plus the tokenizer's eos token."""
    eos = getattr(tokenizer, "eos_token", None)
    return tuple(dict.fromkeys((*family_of(tokenizer).end_markers, *([eos] if eos else []))))


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that stop generation: the end markers that are single tokens in this vocabulary."""
    ids = []
    for marker in end_markers(tokenizer):
        enc = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(enc) == 1 and enc[0] != getattr(tokenizer, "unk_token_id", None):
            ids.append(enc[0])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))
