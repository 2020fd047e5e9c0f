"""Scripted support agents of mixed skill, and `populate` (the demo entry point's `--populate` hook).

- `careful`: looks the order up, then follows the policy (cancel only pending, refund to the order's own
  payment method, refuse otherwise) and says what it did: always solves.
- `hasty`: never looks up; cancels whatever it is asked to (a policy violation on delivered orders) and
  refunds to the user's first card on file, wrong whenever the order was paid with the gift card.
- `confused`: calls a tool that does not exist or forgets an argument, then gives up.
"""

from __future__ import annotations

import json
import re
from random import Random
from typing import Any

from examples.scripted import Agent, PopulateStats, populate_with
from examples.support.environment import SupportTask, make_env
from pipeline.capture.workspace import Workspace


def _call(name: str, **args: str) -> dict[str, Any]:
    return {"content": None, "tool_calls": [{"name": name, "arguments": json.dumps(args)}]}


def _order_id(task: SupportTask) -> str:
    return re.search(r"#W\d+", task.instruction).group(0)


def _kind(task: SupportTask) -> str:
    return task.task_id.split("-")[1]


def careful(task: SupportTask, rng: Random):
    oid, kind = _order_id(task), _kind(task)

    def act(messages: list[dict[str, Any]]) -> dict[str, Any]:
        turn = sum(m["role"] == "assistant" for m in messages)
        if turn == 0:
            return _call("get_order_details", order_id=oid)
        order = json.loads(next(m for m in messages if m["role"] == "tool")["content"])
        if turn == 1 and kind == "cancel" and order["status"] == "pending":
            return _call("cancel_pending_order", order_id=oid, reason="no longer needed")
        if turn == 1 and kind == "refund":
            return _call("refund", order_id=oid, payment_method_id=order["payment_method_id"])
        if kind == "status":
            return {"content": f"Order {oid} is {order['status']}."}
        if kind == "cancel" and order["status"] != "pending":
            return {"content": f"Order {oid} is {order['status']}, so I cannot cancel it."}
        return {"content": f"Done: order {oid} is {'cancelled' if kind == 'cancel' else 'refunded'}."}
    return act


def hasty(task: SupportTask, rng: Random):
    oid, kind = _order_id(task), _kind(task)

    def act(messages: list[dict[str, Any]]) -> dict[str, Any]:
        if messages[-1]["role"] == "user":
            if kind == "cancel":
                return _call("cancel_pending_order", order_id=oid, reason="no longer needed")
            if kind == "refund":
                return _call("refund", order_id=oid, payment_method_id=_first_card(task.user_id))
            return {"content": f"Order {oid} is on its way."}
        return {"content": f"Done: order {oid} is {'cancelled' if kind == 'cancel' else 'refunded'}."}
    return act


def _first_card(user_id: str) -> str:
    """The hasty agent's guess: the user's first payment method on file (it never reads the order)."""
    return make_env().db["users"][user_id]["payment_methods"][0]


def confused(task: SupportTask, rng: Random):
    oid = _order_id(task)

    def act(messages: list[dict[str, Any]]) -> dict[str, Any]:
        if messages[-1]["role"] == "user":
            return rng.choice([_call("lookup_order", order_id=oid), _call("cancel_pending_order", order_id=oid)])
        return {"content": "Sorry, I could not help with that."}
    return act


AGENTS = [Agent("careful", "support-large", careful), Agent("hasty", "support-mini", hasty),
          Agent("confused", "support-nano", confused)]


def populate(ws: Workspace, *, days: list[str], per_day: int, seed: int = 0) -> PopulateStats:
    """Scripted agents attempt the world's training tasks (never its held-out ones)."""
    return populate_with(ws, make_env, make_env().train_tasks(), AGENTS, days=days, per_day=per_day, seed=seed)
