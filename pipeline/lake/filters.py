"""Safe filter expressions over flat trajectory columns, compiled to polars expressions.

Filters come from the CLI and configs and are recorded in lineage, so the language is tiny, parsed by
hand (never `eval`), and errors point at the offending token. Grammar, loosest first (keywords in any case)::

    expr      := expr 'or' expr | expr 'and' expr | 'not' expr | '(' expr ')' | predicate
    predicate := operand CMP operand | operand ['not'] 'in' '[' [literal {',' literal} [',']] ']'
               | operand 'is' ['not'] 'null' | operand 'between' operand 'and' operand | 'true' | 'false'
    operand   := column | number | '-' number | string | 'true' | 'false' | 'now' [('+'|'-') DURATION]
    CMP       := '==' | '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
    column    := [A-Za-z_][A-Za-z0-9_.]*    DURATION := 90s | 30m | 6h | 1.5d ...

Semantics follow what curators mean: a comparison involving a null is *false* (two-valued logic), so
`reward > 0` drops rows without a reward and `not (reward > 0)` keeps them, where SQL would drop both.
A string compared with a datetime is ISO (naive = UTC); a date-only one is the whole day, so
`started_at <= '2026-11-18'` includes the 18th. `now` is fixed at compile time. Without a schema
there are no type checks and *_at columns are taken to be datetimes.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, NoReturn

import polars as pl

from pipeline.lake.filter_tokens import FilterError, Tok, tokenize

__all__ = ["FilterError", "apply_filter", "compile_filter", "describe"]
_CMP = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}  # pl.Expr method names
_UNITS = dict(s=timedelta(seconds=1), m=timedelta(minutes=1), h=timedelta(hours=1), d=timedelta(days=1))
_CATEGORIES = {pl.Boolean: "boolean", pl.String: "string", pl.Categorical: "string", pl.Enum: "string",
               pl.Datetime: "datetime", pl.Date: "datetime", pl.Null: "any"}  # the rest: number or other
_OR, _AND, _ATOM = 1, 2, 3  # binding powers; also how tightly a describe() text is already bound
_Pred = tuple[pl.Expr, str, int]  # compiled expression, normalised text, binding level of that text


class _Val(NamedTuple):  # an operand: a column, a literal or `now`, with the type category used for checks
    built: pl.Expr | None  # None for a plain literal: `expr` builds it when asked (80,000 list items never are)
    kind: str  # col, lit, now
    cat: str  # number, string, boolean, datetime, any (unknown), other (lists, structs...)
    text: str
    pos: int
    value: Any = None
    dtype: Any = None

    @property
    def expr(self) -> pl.Expr:
        return pl.lit(self.value) if self.built is None else self.built


def _time_lit(value: date | datetime, dtype: Any) -> pl.Expr:
    """A literal of the column's own flavour: polars refuses to compare across zones or naive/aware."""
    if type(value) is date and dtype != pl.Date:
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return pl.lit(value) if dtype is None else pl.lit(value).cast(dtype)


def _join(terms: list[_Pred], bp: int) -> _Pred:
    texts = [text if level >= bp else f"({text})" for _, text, level in terms]
    expr = (pl.any_horizontal if bp == _OR else pl.all_horizontal)([expr for expr, _, _ in terms])
    return expr, f" {'or' if bp == _OR else 'and'} ".join(texts), bp


class _Parser:
    """Pratt parser that emits the polars expression and the normalised text in one pass."""

    def __init__(self, src: str, columns: Mapping[str, Any] | None, now: datetime) -> None:
        self.src, self.columns, self.now = src, columns, now
        self.tokens, self.i = tokenize(src), 0

    def peek(self, ahead: int = 0) -> Tok:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Tok:
        tok, self.i = self.peek(), min(self.i + 1, len(self.tokens) - 1)
        return tok

    def at(self, *kinds: str, ahead: int = 0) -> bool:
        return self.peek(ahead).kind in kinds

    def accept(self, kind: str) -> bool:
        if matched := self.at(kind):
            self.next()
        return matched

    def expect(self, kind: str, what: str = "") -> Tok:
        if not self.at(kind):
            self.fail(f"unexpected {self.peek()}, expected {what or repr(kind)}", self.peek())
        return self.next()

    def fail(self, reason: str, at: Tok | _Val) -> NoReturn:
        raise FilterError(reason, self.src, at.pos)

    def expr(self, min_bp: int) -> _Pred:
        # a run of one operator becomes one flat any/all_horizontal: polars optimises a deep `|` tree slowly
        terms, op = [self.unary()], 0
        while self.at("and", "or") and (bp := _OR if self.at("or") else _AND) > min_bp:
            self.next()
            if op and bp != op:  # `a and b or c`: the run of `and` is complete
                terms = [_join(terms, op)]
            terms, op = [*terms, self.expr(bp)], bp
        return _join(terms, op) if op else terms[0]

    def unary(self) -> _Pred:
        if self.accept("not"):
            expr, text, _ = self.unary()
            return ~expr, f"not {text if ' ' not in text else f'({text})'}", _ATOM
        if self.accept("("):
            pred, _ = self.expr(0), self.expect(")")
            return pred
        return self.predicate()

    def predicate(self) -> _Pred:
        left, tok = self.operand(), self.peek()
        if tok.kind in _CMP:
            self.next()
            return self.compare(left, tok.kind, self.operand())
        if self.at("in") or (self.at("not") and self.at("in", ahead=1)):
            self.i += 1 + (negate := self.at("not"))
            return self.membership(left, negate)
        if self.accept("is"):
            negate = self.accept("not")
            self.expect("null")
            expr = left.expr.is_not_null() if negate else left.expr.is_null()
            return expr, f"{left.text} is {'not ' if negate else ''}null", _ATOM
        if self.accept("between"):
            low, _, high = self.operand(), self.expect("and"), self.operand()
            expr = self.compare(left, ">=", low)[0] & self.compare(left, "<=", high)[0]
            return expr, f"{left.text} between {low.text} and {high.text}", _ATOM
        if left.kind == "lit" and left.cat == "boolean":  # `true` / `false` alone
            return left.expr, left.text, _ATOM
        self.fail(f"unexpected {tok}, expected a comparison after {left.text}", tok)

    def operand(self) -> _Val:
        tok = self.next()
        if tok.kind == "ident":
            return self.column(tok)
        if tok.kind == "-" and self.at("number"):
            tok = tok._replace(kind="number", value=-self.next().value)
        if tok.kind in ("number", "string", "true", "false"):
            value = tok.kind == "true" if tok.kind in ("true", "false") else tok.value
            cat = {bool: "boolean", int: "number", float: "number", str: "string"}[type(value)]
            text = str(value).lower() if cat == "boolean" else repr(value)  # quoted the way we parse
            return _Val(None, "lit", cat, text, tok.pos, value)
        if tok.kind == "now":
            when, text = self.now, "now"
            if self.at("+", "-"):
                sign = self.next().kind
                span = self.expect("duration", "a duration such as 90s, 30m, 6h or 7d")
                delta = float(span.text[:-1]) * _UNITS[span.text[-1]]  # OverflowError: see _parse()
                when = when + delta if sign == "+" else when - delta
                text = f"now {sign} {span.text}"
            return _Val(pl.lit(when), "now", "datetime", text, tok.pos, when)
        hint = " (missing values: use 'is null')" if tok.kind == "null" else ""
        self.fail(f"unexpected {tok}, expected a value{hint}", tok)

    def column(self, tok: Tok) -> _Val:
        name, columns = tok.value, self.columns
        if columns is None:  # no schema, no type checks; coerce() still reads ISO strings for *_at columns
            return _Val(pl.col(name), "col", "any", name, tok.pos)
        if name not in columns:
            close = difflib.get_close_matches(name, sorted(columns), n=1, cutoff=0.0)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.fail(f"unknown column '{name}'{hint}; known columns: {', '.join(sorted(columns))}", tok)
        cat = _CATEGORIES.get(columns[name].base_type(), "number" if columns[name].is_numeric() else "other")
        return _Val(pl.col(name), "col", cat, name, tok.pos, dtype=columns[name])

    def coerce(self, val: _Val, other: _Val) -> _Val:
        """An ISO string compared with a datetime becomes a literal of the column's flavour (naive = UTC)."""
        timely = other.cat == "datetime" or (other.cat == "any" and other.text.endswith("_at"))
        if val.kind == "col" or not timely or val.cat not in ("string", "datetime"):
            return val
        value = val.value
        if val.cat == "string":
            try:
                value = datetime.fromisoformat(val.value)
            except ValueError:
                if other.cat == "any":  # no schema, so maybe not a datetime column after all
                    return val
                self.fail(f"{val.text} is not a date or datetime (e.g. '2026-11-16T08:00Z')", val)
            is_day = re.fullmatch(r"\d{4}-\d{2}-\d{2}", val.value)
            value = value.date() if is_day else value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)
        return val._replace(built=_time_lit(value, other.dtype), cat="datetime", value=value)

    def compare(self, left: _Val, op: str, right: _Val) -> _Pred:
        if left.kind != "col" and right.kind == "col":
            left, right, op = right, left, op.translate(str.maketrans("<>", "><"))  # 0 < x is x > 0
        left, right = self.coerce(left, right), self.coerce(right, left)
        cats = {left.cat, right.cat}
        if "other" in cats or not (len(cats) == 1 or "any" in cats or cats == {"boolean", "number"}):
            what = [f"{v.text} ({v.dtype if v.cat == 'other' else v.cat})" for v in (left, right)]
            self.fail(f"cannot compare {what[0]} with {what[1]}", right)
        if type(right.value) is date and left.kind == "col" and left.dtype != pl.Date:  # the whole day
            day, col = right.value, left.expr
            start, end = _time_lit(day, left.dtype), _time_lit(day + timedelta(days=1), left.dtype)
            expr = {"==": (col >= start) & (col < end), "!=": (col < start) | (col >= end),
                    "<": col < start, ">=": col >= start, "<=": col < end, ">": col >= end}[op]
        else:
            expr = getattr(left.expr, _CMP[op])(right.expr)
        return expr.fill_null(False), f"{left.text} {op} {right.text}", _ATOM

    def membership(self, left: _Val, negate: bool) -> _Pred:
        self.expect("[")
        items: list[_Val] = []
        while not self.accept("]"):
            if (item := self.operand()).kind != "lit":
                self.fail(f"a list holds literal values, not {item.text}", item)
            items.append(item)
            if not self.at("]"):
                self.expect(",", "',' or ']'")
        if len({v.cat for v in items}) > 1:
            self.fail("list values must all have the same type", items[-1])
        found = self.any_equal(left, items) if items else pl.lit(False)
        expr = left.expr.is_not_null() & ~found if negate else found
        return expr, f"{left.text} {'not in' if negate else 'in'} [{', '.join(v.text for v in items)}]", _ATOM


    def any_equal(self, left: _Val, items: list[_Val]) -> pl.Expr:
        """`left == item` for any item, as one hash lookup (`is_in`) rather than one comparison per
        item: 80,000 ids were 80,000 expressions, 34.5 s and 4.7 GB to plan. Items are type-checked
        like `==` (all share a category, so checking the first checks them all) and coerced the same
        way; a date-only item against a datetime column keeps its whole-day comparison."""
        self.compare(left, "==", items[0])
        if left.kind != "col" or left.cat not in ("number", "boolean", "string", "datetime"):
            return pl.any_horizontal(pl.lit(False), *(self.compare(left, "==", v)[0] for v in items))
        days, values = [], []
        for item in items:
            value = self.coerce(item, left).value
            if type(value) is date and left.dtype != pl.Date:
                days.append(item)
            else:
                values.append(value)
        parts = [self.compare(left, "==", v)[0] for v in days]
        if values and left.cat == "datetime":
            parts.append(left.expr.is_in(pl.Series(values).cast(left.dtype).implode()))
        elif values and left.cat == "string":
            parts.append(left.expr.cast(pl.String).is_in(pl.Series(values, dtype=pl.String).implode()))
        elif values:  # numbers and booleans: exact integers when both sides are, floats otherwise
            exact = all(isinstance(v, int) for v in values) and (left.dtype.is_integer() or left.dtype == pl.Boolean)
            kind = pl.Int64 if exact else pl.Float64
            parts.append(left.expr.cast(kind, strict=False).is_in(pl.Series(values, dtype=kind, strict=False).implode()))
        return pl.any_horizontal(pl.lit(False), *parts).fill_null(False)


def _parse(expr: str | None, columns: Mapping[str, Any] | None, now: datetime | None) -> _Pred:
    if expr is None or not expr.strip():
        return pl.lit(True), "", _ATOM
    now = now or datetime.now(UTC)
    parser = _Parser(expr, columns, now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC))
    try:
        pred = parser.expr(0)
    except OverflowError:  # date arithmetic past year 9999 (`now - 99999999d`, `'9999-12-31'` + 1 day)
        parser.fail("date out of range", parser.peek(-1))
    except RecursionError:  # hundreds of nested parentheses or `not`s: garbage, not a filter
        parser.fail("expression is nested too deeply", parser.peek())
    if not parser.at("end"):
        parser.fail(f"unexpected {parser.peek()}, expected 'and', 'or' or the end", parser.peek())
    return pred


def compile_filter(expr: str | None, columns: Mapping[str, Any] | None = None, *,
                   now: datetime | None = None) -> pl.Expr:
    """Compile `expr` to a boolean polars expression; empty or None keeps every row. With `columns`
    (name -> dtype, e.g. `df.schema`) unknown names and type mismatches fail here, with a caret,
    instead of as a polars error halfway through a pipeline run."""
    return _parse(expr, columns, now)[0]


def apply_filter(df: pl.DataFrame, expr: str | None, *, now: datetime | None = None) -> pl.DataFrame:
    """Rows of `df` (a DataFrame or LazyFrame) matching `expr`, checked against its schema."""
    return df if not (expr or "").strip() else df.filter(compile_filter(expr, df.collect_schema(), now=now))


def describe(expr: str | None) -> str:
    """Normalised text of `expr` for lineage: canonical keywords, operators, quoting and parentheses,
    so that `reward>0 AND agent="a"` and `reward > 0 and agent == 'a'` record the same filter."""
    return _parse(expr, None, None)[1]
