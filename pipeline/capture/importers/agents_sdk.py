"""OpenAI Agents SDK input lists (`result.to_input_list()`): Responses items whose first item is a
plain `{"role", "content"}` message WITHOUT `type`, followed by `function_call`,
`function_call_output`, `reasoning` and typed `message` items.

Because the first item looks like an OpenAI chat message, such a list used to be taken for OpenAI
chat and fail on `role: function_call`. This format claims a list as soon as ANY item is a typed
function call or output (chat has none), and converts it with the Responses converter, which already
reads an untyped `{role, content}` item as a message. It is registered before `openai_chat`.
"""

from __future__ import annotations

from typing import Any

from pipeline.capture.importers.openai import convert_responses

TYPED = {"function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}
convert = convert_responses


def sniff(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) for i in value) and any(
        i.get("type") in TYPED for i in value)
