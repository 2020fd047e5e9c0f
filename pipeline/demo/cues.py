"""Agents that say which currency the question asks for before they decide to convert (the real-model lane's
traffic, `agents.populate_seen_items`).

Why: whether to convert depends on the question's currency, and in a plain run that decision is one token
(`<tool_call>` or `The`) right after the calculator's result, ~100 tokens from the question. SmolLM2-135M
fine-tuned on such runs learned the marginal choice, not the condition: on its own training rows it put
~0.2 on converting where the row converts, and it converted on 0 of 21 non-USD held-out tasks, over four
runs and three learning rates. An agent that first *copies* the question's currency ("the question asks the
cost in EUR") turns that decision into one that follows the token just written, and copying a word from the
prompt is what a pretrained model already does well: the same budget then converts on every non-USD
held-out task (examples/real/README.md). Agents that think aloud before acting are how real agents write
anyway; the held-out tasks, tools and grading are unchanged.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pipeline.demo.world import Task


def cue_text(task: Task, total: str, converting: bool) -> str:
    """What a cued agent says right after the calculator's result: the USD total and the question's currency,
    then what it does (`: converting.` or `.`) immediately after that currency. An agent that skips a needed
    conversion says so too (a failed attempt, the rejected side of a preference pair)."""
    said = f"{total} USD; the question asks the cost in {task.currency}"
    return f"{said}: converting." if converting else f"{said}."


def cued(script: Generator[dict[str, Any], Any, None], task: Task) -> Generator[dict[str, Any], Any, None]:
    """The same script, saying `cue_text` in the turn that follows a calculator result: before its convert
    call, or before its final answer (kept after the cue). Other turns pass through unchanged."""
    msg, after_calculator, reply = next(script), False, None
    while True:
        calls = msg.get("tool_calls") or []
        if after_calculator and reply is not None and not reply.is_error:
            converting = bool(calls) and calls[0]["name"] == "convert"
            cue = cue_text(task, reply.content.strip(), converting)
            if converting and not msg.get("content"):
                msg = {**msg, "content": cue}
            elif not calls:
                msg = {**msg, "content": f"{cue} {msg.get('content') or ''}".strip()}
        after_calculator = bool(calls) and calls[0]["name"] == "calculator"
        reply = yield msg
        try:
            msg = script.send(reply)
        except StopIteration:
            return
