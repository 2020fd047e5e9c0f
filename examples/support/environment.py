"""A customer-service tool world in the tau-bench style (issue 14 example, not part of the pipeline).

As in tau-bench's retail/airline domains: a small in-memory database of users and orders, tools that read
and write it, a policy the agent must follow, and tasks whose ground truth is the list of write actions a
correct agent takes (`actions`) plus facts its answer must state (`outputs`). The reward replays the
ground-truth actions on a fresh copy of the database and compares: 1.0 when the final database equals it,
every output is in the final answer, and no policy was violated; else 0.

Policy (checked by the tools, every breach recorded in `violations`):
- only a `pending` order may be cancelled, with reason `no longer needed` or `ordered by mistake`;
- only a `delivered` order may be refunded, once, and only to the payment method it was paid with.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from random import Random
from typing import Any

REASONS = ("no longer needed", "ordered by mistake")
ITEMS = {"lamp": 34.0, "kettle": 27.5, "headphones": 89.0, "backpack": 45.0, "mug": 9.5, "charger": 19.0}
NAMES = ["ana", "ben", "chen", "dara", "eli", "fay", "gus", "hana"]


def _tool(name: str, description: str, **params: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": {k: {"type": "string", "description": v} for k, v in params.items()},
        "required": list(params), "additionalProperties": False}}}


TOOLS = [
    _tool("get_order_details", "Status, items, total and payment method of an order.", order_id="e.g. #W1001"),
    _tool("cancel_pending_order", "Cancel a pending order.", order_id="e.g. #W1001",
          reason="'no longer needed' or 'ordered by mistake'"),
    _tool("refund", "Refund a delivered order to its payment method.", order_id="e.g. #W1001",
          payment_method_id="the order's payment method"),
]


def make_db() -> dict[str, Any]:
    """The same database every time: 8 users with a card and a gift card, 3 orders each."""
    rng, users, orders = Random("support-db"), {}, {}
    for u, name in enumerate(NAMES):
        uid = f"{name}_{1000 + 37 * u}"
        methods = [f"credit_card_{2000 + u}", f"gift_card_{3000 + u}"]
        users[uid] = {"payment_methods": methods, "orders": []}
        for k in range(3):
            oid = f"#W{1001 + 3 * u + k}"
            item = rng.choice(sorted(ITEMS))
            orders[oid] = {"user_id": uid, "item": item, "total": ITEMS[item], "status": ("pending", "delivered",
                           "delivered" if k == 2 else "pending")[k], "payment_method_id": rng.choice(methods),
                           "refunded": False}
            users[uid]["orders"].append(oid)
    return {"users": users, "orders": orders}


@dataclass(frozen=True)
class SupportTask:
    """A request, its ground truth (`actions`: the writes a correct agent makes; `outputs`: what its answer
    must say) in tau-bench's task shape."""

    task_id: str
    user_id: str
    instruction: str
    actions: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "user_id": self.user_id, "instruction": self.instruction,
                "actions": self.actions, "outputs": self.outputs}


def task_for(kind: str, order_id: str, db: dict[str, Any] | None = None) -> SupportTask:
    """One task about one order. Kinds: cancel, refund, status; a cancel of a delivered order must be refused."""
    order = (db or make_db())["orders"][order_id]
    uid, status = order["user_id"], order["status"]
    if kind == "cancel":
        text = f"I am {uid}. Please cancel order {order_id}, I no longer need it."
        ok = status == "pending"
        actions = [{"name": "cancel_pending_order", "arguments": {"order_id": order_id,
                                                                  "reason": "no longer needed"}}] if ok else []
        outputs = ["cancelled"] if ok else ["cannot"]
    elif kind == "refund":
        text = f"I am {uid}. Order {order_id} arrived broken, please refund it."
        actions = [{"name": "refund", "arguments": {"order_id": order_id,
                                                    "payment_method_id": order["payment_method_id"]}}]
        outputs = ["refunded"]
    else:
        text, actions, outputs = f"I am {uid}. What is the status of order {order_id}?", [], [status]
    return SupportTask(f"support-{kind}-{order_id[1:]}", uid, text, actions, outputs)


def all_tasks() -> list[SupportTask]:
    """Every task of the world: cancels of pending and delivered orders, refunds of delivered ones, status."""
    db = make_db()
    out = []
    for oid, order in sorted(db["orders"].items()):
        out += [task_for("cancel", oid, db), task_for("status", oid, db)]
        if order["status"] == "delivered":
            out.append(task_for("refund", oid, db))
    return out


class SupportEnv:
    """The Environment protocol (pipeline.environment) over the database above."""

    name = "support"
    tools = TOOLS

    def __init__(self, n_heldout: int = 12):
        self.n_heldout = n_heldout
        self.db, self.violations = make_db(), []

    def eval_tasks(self, seed: int, n: int) -> list[SupportTask]:
        """The held-out tasks: a fixed sample of `n_heldout` (the same for every seed, so curation can keep
        them out of train), the first `n` of them in a seed-dependent order."""
        pool = Random("support-heldout").sample(all_tasks(), self.n_heldout)
        Random(seed).shuffle(pool)
        return pool[:n]

    def train_tasks(self) -> list[SupportTask]:
        """Every task not held out: what the scripted agents practise on."""
        held = {t.task_id for t in Random("support-heldout").sample(all_tasks(), self.n_heldout)}
        return [t for t in all_tasks() if t.task_id not in held]

    def load_task(self, data: dict[str, Any]) -> SupportTask:
        return SupportTask(**{k: data[k] for k in ("task_id", "user_id", "instruction", "actions", "outputs")})

    def reset(self, task: SupportTask) -> list[dict[str, Any]]:
        self.db, self.violations = make_db(), []
        return [{"role": "system", "content": "You are a store support agent. Look orders up before acting. Cancel "
                 "only pending orders; refund only delivered orders, to their own payment method."},
                {"role": "user", "content": task.instruction}]

    def step(self, name: str, arguments: str) -> tuple[str, bool]:
        try:
            args = json.loads(arguments or "{}")
            handler = getattr(self, f"_{name}") if name in {t["function"]["name"] for t in TOOLS} else None
            if handler is None:
                return f"error: unknown tool {name!r}", True
            return handler(**args), False
        except (ValueError, TypeError) as exc:
            return f"error: {exc}", True
        except PermissionError as exc:  # a policy check refused the write
            self.violations.append(str(exc))
            return f"error: policy: {exc}", True

    def _order(self, order_id: str) -> dict[str, Any]:
        if order_id not in self.db["orders"]:
            raise ValueError(f"order {order_id!r} not found")
        return self.db["orders"][order_id]

    def _get_order_details(self, order_id: str) -> str:
        o = self._order(order_id)
        return json.dumps({"order_id": order_id, **{k: o[k] for k in ("status", "item", "total", "payment_method_id")}})

    def _cancel_pending_order(self, order_id: str, reason: str) -> str:
        o = self._order(order_id)
        if o["status"] != "pending":
            raise PermissionError(f"order {order_id} is {o['status']}: only pending orders may be cancelled")
        if reason not in REASONS:
            raise PermissionError(f"reason {reason!r} is not one of {list(REASONS)}")
        o["status"] = "cancelled"
        return f"order {order_id} cancelled"

    def _refund(self, order_id: str, payment_method_id: str) -> str:
        o = self._order(order_id)
        if o["status"] != "delivered" or o["refunded"]:
            raise PermissionError(f"order {order_id} is {o['status']}{' and refunded' * o['refunded']}: "
                                  "only a delivered order may be refunded, once")
        if payment_method_id != o["payment_method_id"]:
            raise PermissionError(f"refunds go to the order's payment method, not {payment_method_id}")
        o["refunded"] = True
        return f"order {order_id} refunded {o['total']:.2f} to {payment_method_id}"

    def expected_db(self, task: SupportTask) -> dict[str, Any]:
        """The ground-truth final database: the task's actions replayed on a fresh copy."""
        ref = SupportEnv(self.n_heldout)
        for action in task.actions:
            ref.step(action["name"], json.dumps(action["arguments"]))
        return copy.deepcopy(ref.db)

    def reward(self, task: SupportTask, messages: list[dict[str, Any]]) -> float:
        """1.0: the database ends as the ground truth says, the answer states every output, no violations."""
        answer = ((messages[-1].get("content") or "") if messages else "").lower()
        solved = self.db == self.expected_db(task) and all(o.lower() in answer for o in task.outputs)
        return 1.0 if solved and not self.violations else 0.0


def make_env(n_heldout: int = 12) -> SupportEnv:
    return SupportEnv(n_heldout)
