"""The demo world: a small shop of priced items, three tools and tasks whose answers are checkable.

Why it exists: tracemill needs traffic that looks like real agent runs (tool calls, tool errors, late
rewards, good and bad attempts at the same task) *and* a verifiable reward, so that curation, DPO
pairs, RL reward functions and evaluation can be exercised end to end with a tiny model on a CPU.
Prices are drawn per task, so an answer is right only if numbers were copied from tool results, and
arithmetic goes through the calculator because a tiny model cannot multiply (see ARCHITECTURE.md).
Everything is a pure function of a seed: no wall clock, no global random state. Grading is in
`pipeline.demo.scoring`, the rollout loop in `pipeline.demo.rollout`, the scripted agents and
`populate` in `pipeline.demo.agents`, and the environment seam the pipeline sees in
`pipeline.demo.environment`.
"""

from __future__ import annotations

import ast
import hashlib
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from random import Random
from typing import Any

import orjson


@dataclass(frozen=True)
class Item:
    """A product: task prices per `unit` are drawn uniformly from [low, high] in its base currency."""

    name: str
    unit: str
    low: float
    high: float
    currency: str = "USD"  # lookup_price answers in USD, so every base price is kept in USD


ITEMS: dict[str, Item] = {i.name: i for i in [
    Item("apples", "kg", 1.5, 4.0), Item("bananas", "kg", 0.8, 2.5), Item("rice", "kg", 1.5, 4.5),
    Item("potatoes", "kg", 0.7, 2.0), Item("tomatoes", "kg", 2.0, 5.0), Item("cheese", "kg", 8.0, 20.0),
    Item("coffee", "kg", 10.0, 25.0), Item("milk", "l", 0.8, 2.0), Item("eggs", "pack", 2.0, 5.0),
    Item("flour", "bag", 1.0, 3.0), Item("nails", "pack", 2.0, 6.0), Item("screws", "pack", 2.5, 7.0),
    Item("batteries", "pack", 4.0, 12.0), Item("paint", "l", 8.0, 25.0), Item("tape", "roll", 1.5, 5.0),
    Item("rope", "m", 0.5, 3.0), Item("wire", "m", 0.3, 2.0), Item("glue", "tube", 2.0, 6.0),
    Item("cement", "bag", 6.0, 15.0), Item("sandpaper", "sheet", 0.4, 1.5),
]}
RATES: dict[str, float] = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "CHF": 0.88, "CAD": 1.36}  # per 1 USD
QUANTITIES = (2, 3, 4, 5, 6, 7, 8, 9, 1.5, 2.5)
USD_SHARE = 0.3  # share of tasks asked in USD: their chain has no convert step
# Items the real-model lane (`make demo-real`) never trains on: its held-out tasks ask about them, so a
# success there means the model copied a name it has never seen (a tiny model cannot; a pretrained one can).
UNSEEN_ITEMS: tuple[str, ...] = ("batteries", "cement", "coffee", "paint", "sandpaper", "wire")
SEEN_ITEMS: tuple[str, ...] = tuple(i for i in ITEMS if i not in UNSEEN_ITEMS)
SYSTEM_PROMPT = "Use the tools and copy numbers from their results. End with: The answer is <amount> <currency>."


def _tool(name: str, description: str, **params: tuple[str, str]) -> dict[str, Any]:
    props = {k: {"type": t, "description": d} for k, (t, d) in params.items()}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": list(params), "additionalProperties": False}}}


TOOLS: list[dict[str, Any]] = [
    _tool("lookup_price", "Price of one unit of an item in USD.", item=("string", "Item name, e.g. apples.")),
    _tool("calculator", "Evaluate arithmetic with + - * / and parentheses.", expression=("string", "e.g. 3 * 2.35")),
    _tool("convert", "Convert an amount between currencies.", amount=("number", "Amount to convert."),
          from_currency=("string", "e.g. USD"), to_currency=("string", "e.g. EUR")),
]
_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def fmt(x: float) -> str:
    """Quantities print without trailing zeros (`3`, `1.5`); money always has two decimals."""
    return f"{x:g}"


class ToolError(ValueError):
    """A tool refused its input; the agent sees the message as a tool result with is_error=True."""


# ---- tools ---------------------------------------------------------------------------------------
_OPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        return -_eval(node.operand) if isinstance(node.op, ast.USub) else _eval(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ToolError("invalid expression: only numbers, + - * / and parentheses are allowed")


def calculate(expression: str) -> str:
    """Safe arithmetic: the expression is parsed, and only number literals and + - * / are walked,
    so names, calls, attributes and `**` never execute. Result rounded to 2 decimals."""
    if not isinstance(expression, str) or not expression.strip() or len(expression) > 200:
        raise ToolError("expression must be a non-empty string of at most 200 characters")
    try:
        value = _eval(ast.parse(expression.strip(), mode="eval").body)
    except SyntaxError as exc:
        raise ToolError("invalid expression: could not parse it") from exc
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    if value != value or abs(value) > 1e12:
        raise ToolError("result out of range")
    return f"{round(value, 2):.2f}"


def convert(amount: float, from_currency: str, to_currency: str) -> str:
    """Fixed rates (RATES, per USD), so ground truth never drifts; returns e.g. `6.49 EUR`."""
    src, dst = str(from_currency).upper(), str(to_currency).upper()
    if unknown := [c for c in (src, dst) if c not in RATES]:
        raise ToolError(f"unknown currency {unknown[0]!r}; known: {', '.join(RATES)}")
    return f"{round(amount / RATES[src] * RATES[dst], 2):.2f} {dst}"


def check_args(name: str, arguments: Any) -> dict[str, Any]:
    """Validate arguments against the tool's JSON schema: missing, extra and mistyped ones are errors."""
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError as exc:
            raise ToolError("arguments are not valid JSON") from exc
    if not isinstance(arguments, dict):
        raise ToolError("arguments must be a JSON object")
    schema = _SCHEMAS[name]
    if extra := [k for k in arguments if k not in schema["properties"]]:
        raise ToolError(f"unexpected argument {extra[0]!r}")
    for key in schema["required"]:
        if key not in arguments:
            raise ToolError(f"missing argument {key!r}")
        want, value = schema["properties"][key]["type"], arguments[key]
        ok = isinstance(value, str) if want == "string" else type(value) in (int, float)
        if not ok:
            raise ToolError(f"{key} must be a {want}, got {type(value).__name__}")
    return arguments


# ---- tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One question with its ground truth. `task_id` is derived from the content, so the same task
    drawn by two runs (or two agents) groups together: DPO pairs and a stable eval split."""

    task_id: str
    question: str
    item: str
    quantity: float
    unit: str
    price: float
    currency: str
    total_usd: float
    answer: float

    @property
    def expected_chain(self) -> list[tuple[str, dict[str, Any]]]:
        """The tool calls a correct agent makes, in order (convert only when not asked in USD)."""
        chain: list[tuple[str, dict[str, Any]]] = [
            ("lookup_price", {"item": self.item}),
            ("calculator", {"expression": f"{fmt(self.quantity)} * {self.price:.2f}"})]
        if self.currency != "USD":
            chain.append(("convert", {"amount": self.total_usd, "from_currency": "USD",
                                      "to_currency": self.currency}))
        return chain

    def price_of(self, item: str) -> float:
        """The task's own item has the drawn price; other items get a stable price of their own."""
        if item == self.item:
            return self.price
        it = ITEMS[item]
        return round(Random(f"{self.task_id}|{item}").uniform(it.low, it.high), 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Rebuild a task from trajectory metadata, e.g. to roll a trained model out on an eval task."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def build_task(item: str, quantity: float, price: float, currency: str) -> Task:
    it = ITEMS[item]
    unit = it.unit if it.unit in ("kg", "l", "m") or quantity == 1 else f"{it.unit}s"
    question = f"How much do {fmt(quantity)} {unit} of {item} cost in {currency}?"
    total = float(calculate(f"{fmt(quantity)} * {price:.2f}"))
    answer = total if currency == "USD" else float(convert(total, "USD", currency).split()[0])
    key = f"{item}|{fmt(quantity)}|{price:.2f}|{currency}"
    return Task(task_id="t-" + hashlib.sha1(key.encode()).hexdigest()[:12], question=question, item=item,
                quantity=quantity, unit=it.unit, price=price, currency=currency, total_usd=total, answer=answer)


def make_task(rng: Random, items: tuple[str, ...] | None = None) -> Task:
    """A random task about one of `items` (default: every item)."""
    item = rng.choice(list(items or ITEMS))
    quantity = rng.choice(QUANTITIES)
    price = round(rng.uniform(ITEMS[item].low, ITEMS[item].high), 2)
    currency = "USD" if rng.random() < USD_SHARE else rng.choice([c for c in RATES if c != "USD"])
    return build_task(item, quantity, price, currency)


def eval_tasks(seed: int, n: int, unseen_share: float = 0.0) -> list[Task]:
    """`n` fresh tasks from a random stream separate from `populate`'s, so they are not training tasks.
    With `unseen_share`, that share of them (every k-th, so both kinds spread over the list) asks about
    `UNSEEN_ITEMS` and the rest about `SEEN_ITEMS`; 0 draws from every item, as the tiny demo does."""
    rng = Random(f"eval-tasks|{seed}")
    if unseen_share <= 0:
        return [make_task(rng) for _ in range(n)]
    n_unseen = round(n * unseen_share)
    unseen_at = {round(k * n / n_unseen) for k in range(n_unseen)} if n_unseen else set()
    return [make_task(rng, UNSEEN_ITEMS if i in unseen_at else SEEN_ITEMS) for i in range(n)]


def call_tool(task: Task, name: str, arguments: Any) -> tuple[str, bool]:
    """Run one tool against the task's world; returns (content, is_error) instead of raising,
    because a failed call is an observation the agent must react to."""
    try:
        if name not in _SCHEMAS:
            raise ToolError(f"unknown tool {name!r}; available: {', '.join(_SCHEMAS)}")
        args = check_args(name, arguments)
        if name == "lookup_price":
            item = args["item"].strip().lower()
            if item not in ITEMS:
                raise ToolError(f"unknown item {args['item']!r}")
            return f"{task.price_of(item):.2f} USD/{ITEMS[item].unit}", False
        if name == "calculator":
            return calculate(args["expression"]), False
        return convert(args["amount"], args["from_currency"], args["to_currency"]), False
    except ToolError as exc:
        return f"error: {exc}", True
