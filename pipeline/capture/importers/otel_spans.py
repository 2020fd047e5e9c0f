"""What a GenAI span means: model call, tool execution or agent run, under the three conventions
found in the wild.

* OTel GenAI semconv: `gen_ai.operation.name` (chat | execute_tool | invoke_agent …), messages as JSON
  in `gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions` (typed parts),
  `gen_ai.tool.definitions`, `gen_ai.usage.*`, `gen_ai.tool.call.{id,arguments,result}`.
* OpenInference: `openinference.span.kind` (LLM | TOOL | AGENT …), messages flattened into indexed
  attributes `llm.input_messages.N.message.{role,content,tool_calls.M.tool_call.function.*}`,
  `llm.token_count.*`, `llm.tools.N.tool.json_schema`, `tool.name`, `input.value`/`output.value`.
* OpenLLMetry (pre-semconv): `gen_ai.prompt.N.*` / `gen_ai.completion.N.*`, flattened the same way.

Indexed attributes are unflattened into nested lists/dicts and then read as chat messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipeline.capture.importers.base import as_text, at, loads_layers
from pipeline.capture.importers.calls import CallLinker, decode_arguments
from pipeline.capture.importers.chat import chat_message, make_meta
from pipeline.capture.importers.otlp_wire import Span
from pipeline.capture.importers.parts import Assembler, otel_messages
from pipeline.capture.importers.threads import Step, ToolRun
from pipeline.schema import Message, ToolCall

CHAT_OPS = {"chat", "text_completion", "generate_content", "completion"}
CONTENT_PREFIXES = ("gen_ai.input.messages", "gen_ai.output.messages", "llm.input_messages",
                    "llm.output_messages", "gen_ai.prompt.", "gen_ai.completion.", "input.value", "output.value")


def classify(attrs: dict[str, Any]) -> str | None:
    op = attrs.get("gen_ai.operation.name")
    kind = str(attrs.get("openinference.span.kind") or "").upper()
    if op in CHAT_OPS or kind == "LLM" or "gen_ai.input.messages" in attrs or "gen_ai.prompt.0.role" in attrs:
        return "chat"
    if op == "execute_tool" or kind == "TOOL":
        return "tool"
    if op in ("invoke_agent", "create_agent") or kind == "AGENT":
        return "agent"
    return None


def unflatten(attrs: dict[str, Any], prefix: str) -> list[Any]:
    """`prefix.0.message.role = x` … → `[{"message": {"role": x}}]` (numeric segments become lists)."""
    root: dict[str, Any] = {}
    for k, v in attrs.items():
        if not k.startswith(prefix + "."):
            continue
        node = root
        parts = k[len(prefix) + 1:].split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = v
    return _listify(root) if root else []


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


def _oi_message(item: dict[str, Any]) -> dict[str, Any]:
    """An OpenInference message (`message.role`, `message.tool_calls.N.tool_call.function.*`) as chat."""
    m = item.get("message", item)
    calls = [c.get("tool_call", c) for c in m.get("tool_calls") or []]
    content = m.get("content")
    if content is None and m.get("contents"):
        content = [c.get("message_content", c) for c in m["contents"]]
    return {"role": m.get("role"), "content": content, "tool_calls": calls,
            "tool_call_id": m.get("tool_call_id"), "name": m.get("name")}


def _flat_messages(items: list[Any], notes: Counter[str], path: str) -> list[Message]:
    linker = CallLinker(notes)
    out = []
    for i, item in enumerate(items):
        with at(path, i):
            out.append(chat_message(_oi_message(item), linker, notes))
    return out


def _messages(attrs: dict[str, Any], side: str, notes: Counter[str], meta: Any = None) -> list[Message]:
    key = f"gen_ai.{side}.messages"
    if key in attrs:
        asm = Assembler(CallLinker(notes), notes)
        if side == "input" and attrs.get("gen_ai.system_instructions"):
            with at("gen_ai.system_instructions"):
                parts = loads_layers(attrs["gen_ai.system_instructions"])
                otel_messages([{"role": "system", "parts": parts}], asm, "")
        with at(key):
            otel_messages(attrs[key], asm, "", meta)
        return asm.messages
    for prefix in (f"llm.{side}_messages", "gen_ai.prompt" if side == "input" else "gen_ai.completion"):
        items = unflatten(attrs, prefix)
        if items:
            msgs = _flat_messages(items, notes, prefix)
            if meta is not None and msgs:
                msgs[-1] = msgs[-1].model_copy(update={"meta": meta})
            return msgs
    return []


def _tools(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    defs = loads_layers(attrs.get("gen_ai.tool.definitions"))
    if isinstance(defs, list):
        return [d for d in defs if isinstance(d, dict)]
    return [t for t in (loads_layers((x.get("tool") or {}).get("json_schema")) for x in unflatten(attrs, "llm.tools")
                        if isinstance(x, dict)) if isinstance(t, dict)]


def step_of(span: Span, notes: Counter[str]) -> Step:
    a = span.attrs
    finish = a.get("gen_ai.response.finish_reasons")
    latency = (span.end - span.start).total_seconds() * 1000 if span.start and span.end else None
    meta = make_meta(
        timestamp=span.start, model=a.get("gen_ai.response.model") or a.get("gen_ai.request.model") or a.get("llm.model_name"),
        usage={"input": a.get("gen_ai.usage.input_tokens", a.get("llm.token_count.prompt")),
               "output": a.get("gen_ai.usage.output_tokens", a.get("llm.token_count.completion"))},
        latency_ms=latency, finish_reason=finish[0] if isinstance(finish, list) and finish else finish,
        response_id=a.get("gen_ai.response.id"), span_id=span.span_id)
    return Step(input=_messages(a, "input", notes), output=_messages(a, "output", notes, meta),
                start=span.start, end=span.end, ref=span.span_id, agent=a.get("gen_ai.agent.name"),
                model=meta.model if meta else None, tools=_tools(a))


def tool_run_of(span: Span) -> ToolRun:
    a = span.attrs
    result = a.get("gen_ai.tool.call.result", a.get("output.value"))
    return ToolRun(call_id=a.get("gen_ai.tool.call.id") or a.get("tool_call.id"),
                   name=a.get("gen_ai.tool.name") or a.get("tool.name") or span.name,
                   result=loads_layers(result), is_error=span.error or bool(a.get("error.type")), start=span.start,
                   arguments=a.get("gen_ai.tool.call.arguments", a.get("tool.parameters", a.get("input.value"))))


def tool_messages(runs: list[ToolRun]) -> Step:
    """No model call was traced with content: each tool execution becomes a call plus its result."""
    linker = CallLinker()
    msgs: list[Message] = []
    for r in sorted(runs, key=lambda r: (r.start is None, r.start or 0)):
        cid = linker.call(r.call_id, r.name)
        msgs.append(Message(role="assistant", tool_calls=[
            ToolCall(id=cid, name=r.name or "tool", arguments=decode_arguments(r.arguments, linker.notes))]))
        msgs.append(Message(role="tool", tool_call_id=linker.result(r.call_id or cid, r.name), name=r.name, is_error=r.is_error,
                            content=as_text(r.result)))
    return Step(input=[], output=msgs)
