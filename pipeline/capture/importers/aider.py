"""aider chat history (`.aider.chat.history.md`): Markdown, not JSON, read as one text record.

aider appends every session to the same file, each opened by `# aider chat started at <local time>`.
Inside a session, `#### ` lines are what the person typed (one per input line), `> ` lines are
aider's own output (settings banner, `> Applied edit to <file>`, `> Commit <sha> <msg>`, `> Tokens: …`,
errors), and everything else is the model's reply, SEARCH/REPLACE blocks included. There are no ids,
no per-message times and no structured tool calls: edits are text in the reply and their effect is
reported by aider, so applied edits and commits go to metadata (not invented tool calls), and the
`> Tokens:` line after a reply becomes that reply's usage. The model comes from the banner.

Sessions with neither input nor reply (an aborted start) are skipped. A session's id is its start
time plus the file name, so importing the grown file again replaces sessions instead of adding them;
the start time is aider's local time, stored as if UTC (the file does not say the zone).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pipeline.capture.importers.base import Context, Item, build_trajectory, stable_id
from pipeline.capture.importers.chat import make_meta
from pipeline.capture.importers.source import Source
from pipeline.schema import Message

START = re.compile(r"^# aider chat started at (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\s*$", re.MULTILINE)
MODEL = re.compile(r"^> (?:Main model|Model): (\S+)")
TOKENS = re.compile(r"^> Tokens: ([\d.]+)(k?) sent, ([\d.]+)(k?) received(?:\. Cost: \$([\d.]+) message)?")
VERSION = re.compile(r"^> Aider (v[\w.\-]+)")


def sniff(value: Any) -> bool:
    return isinstance(value, str) and bool(START.search(value[:4096]))


def _count(num: str, k: str) -> int:
    return round(float(num) * (1000 if k else 1))


class _Session:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.kind: str | None = None
        self.buf: list[str] = []
        self.info: dict[str, Any] = {"applied_edits": [], "commits": [], "aider_output_lines": 0}
        self.model: str | None = None
        self.version: str | None = None

    def flush(self) -> None:
        text = "\n".join(self.buf).strip()
        if text and self.kind is not None:
            self.messages.append(Message(role=self.kind, content=text))
        self.kind, self.buf = None, []

    def line(self, line: str) -> None:
        if line.startswith("####"):
            if self.kind != "user":
                self.flush()
                self.kind = "user"
            self.buf.append(line[4:].removeprefix(" ").rstrip())
        elif line == ">" or line.startswith("> "):
            self.flush()
            self._aider(line.rstrip())
        else:
            if self.kind != "assistant":
                self.flush()
                self.kind = "assistant"
            self.buf.append(line.rstrip("\n"))

    def _aider(self, line: str) -> None:
        self.info["aider_output_lines"] += 1
        if m := MODEL.match(line):
            self.model = self.model or m.group(1)
        elif m := VERSION.match(line):
            self.version = m.group(1)
        elif line.startswith("> Applied edit to "):
            self.info["applied_edits"].append(line.removeprefix("> Applied edit to "))
        elif line.startswith("> Commit "):
            self.info["commits"].append(line.removeprefix("> Commit "))
        elif (m := TOKENS.match(line)) and self.messages and self.messages[-1].role == "assistant":
            cost = float(m.group(5)) if m.group(5) else None
            meta = make_meta(model=self.model, usage={"input_tokens": _count(m.group(1), m.group(2)),
                                                      "output_tokens": _count(m.group(3), m.group(4))},
                             cost_usd=cost)
            self.messages[-1] = self.messages[-1].model_copy(update={"meta": meta})


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    text = src.value if isinstance(src.value, str) else ""
    starts = list(START.finditer(text))
    for k, m in enumerate(starts):
        body = text[m.end(): starts[k + 1].start() if k + 1 < len(starts) else len(text)]
        s = _Session()
        for line in body.splitlines():
            s.line(line)
        s.flush()
        if not s.messages:
            continue
        started = m.group(1).replace(" ", "T")
        yield build_trajectory(
            ctx, trajectory_id=stable_id(ctx.fmt, ctx.file, started), messages=s.messages,
            original={"session_start": m.group(1)}, agent="aider", agent_version=s.version, model=s.model,
            session_id=f"{ctx.file or 'aider'}@{started}", started_at=started,
            notes=Counter({"time_zone_unknown": 1}), **{k: v or None for k, v in s.info.items()})
