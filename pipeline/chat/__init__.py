"""Chat rendering, loss masks and tool-call parsing in the base model's own template (one mechanism for
every model family, tracemill's tiny model included). Start at `render.chat_template_for`."""

from pipeline.chat.families import ChatFamily, detect_family
from pipeline.chat.masks import assistant_spans, tokenize_conversation, tokenize_prompt
from pipeline.chat.messages import canonical_arguments
from pipeline.chat.parse import count_tool_calls, parse_assistant_output
from pipeline.chat.render import (
    ChatTemplate,
    ChatTemplateError,
    adopt_template,
    chat_template_for,
    end_markers,
    family_of,
    render_prompt,
    render_text,
    stop_token_ids,
)

__all__ = ["ChatFamily", "ChatTemplate", "ChatTemplateError", "adopt_template", "assistant_spans", "canonical_arguments",
           "chat_template_for", "count_tool_calls", "detect_family", "end_markers", "family_of",
           "parse_assistant_output", "render_prompt", "render_text", "stop_token_ids", "tokenize_conversation",
           "tokenize_prompt"]
