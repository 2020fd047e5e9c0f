"""Built-in, world-independent reward functions (`tracemill.rewards:<name>` in a corpus spec's `rewards:`).

They keep TRL's reward-function signature, `f(prompts=…, completions=…, completion_ids=…, **dataset
columns) -> list[float | None]`, so the same callables work in plain `GRPOTrainer(reward_funcs=[...])`.
A completion is TRL's text (one generated turn) or a conversational list of messages (a whole rollout,
as online evaluation passes it). None means "does not apply here" (TRL then leaves the function out of
that sample's sum): no tool call to check, no ground truth to match.

- `valid_tool_call`: every tool call parses and its arguments validate against that tool's JSON schema
  (the `tools` column, else the environment's tools), with `jsonschema` — the full standard, not a subset.
- `exact_answer`: the final answer equals the ground truth's answer after folding case, spaces and a
  trailing full stop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pipeline.chat import parse_assistant_output


def _messages(completion: Any) -> list[dict[str, Any]]:
    """Assistant messages of a completion: parsed from generated text, or taken as they are."""
    if isinstance(completion, str):
        return [parse_assistant_output(completion)]
    return [m for m in completion or [] if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]


def _json(value: Any, default: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default if value == "" else value
    return default if value is None else value


def _schemas(tools: Any) -> dict[str, dict[str, Any]]:
    return {(t.get("function") or t).get("name"): (t.get("function") or t).get("parameters") or {}
            for t in _json(tools, []) or [] if isinstance(t, dict)}


def tool_call_problem(name: str, arguments: Any, tools: Any) -> str | None:
    """Why a tool call is invalid against the tool definitions (unknown tool, unparsable or
    schema-violating arguments), or None when it is valid."""
    import jsonschema

    schemas = _schemas(tools)
    if name not in schemas:
        return f"unknown tool {name!r}"
    args = _json(arguments, {})
    if not isinstance(args, dict):
        return "arguments are not a JSON object"
    try:
        jsonschema.validate(args, schemas[name])
    except jsonschema.ValidationError as exc:
        return exc.message
    except jsonschema.SchemaError as exc:
        return f"the tool's own schema is invalid: {exc.message}"
    return None


def valid_tool_call(completions: Sequence[Any], tools: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when every tool call of the completion is valid against its tool's JSON schema, 0.0 when one is
    not (or its JSON does not parse), None when the completion makes no tool call."""
    tools = tools if tools is not None else [kwargs.get("env_tools")] * len(completions)
    out: list[float | None] = []
    for completion, defs in zip(completions, tools, strict=True):
        msgs = _messages(completion)
        calls = [c for m in msgs for c in m.get("tool_calls") or []]
        if any(m.get("invalid_tool_calls") for m in msgs):
            out.append(0.0)
        elif not calls:
            out.append(None)
        else:
            out.append(float(all(tool_call_problem((c.get("function") or c).get("name"),
                                                   (c.get("function") or c).get("arguments"), defs) is None
                                 for c in calls)))
    return out


_FOLD = re.compile(r"\s+")


def _fold(text: Any) -> str:
    return _FOLD.sub(" ", str(text)).strip().rstrip(".").strip().casefold()


def expected_answer(ground_truth: Any) -> str | None:
    """The answer a ground truth holds: a bare value, or a dict's `answer` / `final_answer` field."""
    data = _json(ground_truth, None)
    if isinstance(data, dict):
        data = data.get("answer", data.get("final_answer"))
    return None if data is None or data == "" else _fold(data)


def exact_answer(completions: Sequence[Any], ground_truth: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when the final answer (the last assistant turn without tool calls) equals the ground truth's
    answer (case, spaces and a trailing full stop folded), 0.0 otherwise, None without a ground truth."""
    out: list[float | None] = []
    for completion, truth in zip(completions, ground_truth, strict=True):
        want = expected_answer(truth)
        finals = [m for m in _messages(completion) if not m.get("tool_calls") and not m.get("invalid_tool_calls")]
        got = _fold(finals[-1].get("content") or "") if finals else None
        out.append(None if want is None else float(got == want))
    return out
