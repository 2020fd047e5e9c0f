"""Claude Code session transcripts (`~/.claude/projects/<cwd>/<session>.jsonl`, CLI 1.0.x to 2.1.x).

The CLI writes one record per *content block*: an assistant reply with text and two tool calls is
three `assistant` records sharing `message.id`, each repeating `usage`. They are merged back into one
message per `message.id` (at the position of its first block), and usage is counted once per message
from its last record: counting per record would triple the token bill. Tool results are `user`
records holding `tool_result` blocks, linked by `tool_use_id`; the CLI's parsed copy of the result
(`toolUseResult`: Bash stdout/stderr, Edit patches, a rejection string) goes to the tool message's meta.

Subagents become trajectories of their own, linked to the parent by `metadata.parent_trajectory_id`:
inline sidechains (`isSidechain`, 1.0.x; one per root record with `parentUuid: null`, matched to the
parent's `Task` call by its prompt text) and 2.x `subagents/agent-<id>.jsonl` files (`agentId`).

Bookkeeping records (`summary`, `file-history-snapshot`, `queue-operation`, `system` compaction
boundaries, …) are metadata, not messages. A `summary` names the session whose message its `leafUuid`
points at, often another file, so only summaries of this file's own messages are kept as titles.

Idempotency: the trajectory id is the session id, so re-importing a grown file replaces the
trajectory (last received wins) instead of adding a second one; its start (the first timestamp)
does not move as the file grows, so it stays in the same day partition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

from pipeline.capture.importers.base import Context, Item, as_text, at, build_trajectory, stable_id
from pipeline.capture.importers.calls import CallLinker
from pipeline.capture.importers.chat import make_meta
from pipeline.capture.importers.parts import Assembler
from pipeline.capture.importers.sessions import (
    first_time,
    image_placeholder,
    last_time,
    mark_unanswered,
    whole_file,
)
from pipeline.capture.importers.source import Source
from pipeline.schema import Message

MESSAGE_TYPES = ("user", "assistant")
BOOKKEEPING_TYPES = {"summary", "file-history-snapshot", "queue-operation", "system", "attachment",
                     "last-prompt", "permission-mode", "mode"}
CACHE_KEYS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def sniff(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    if kind in MESSAGE_TYPES:
        return isinstance(value.get("message"), dict) and "sessionId" in value and "uuid" in value
    if kind == "summary":
        return "leafUuid" in value and "summary" in value
    if kind == "file-history-snapshot":
        return "snapshot" in value and "messageId" in value
    return kind in BOOKKEEPING_TYPES and "sessionId" in value and "timestamp" in value


def _image(block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    return image_placeholder(source.get("media_type"), source.get("data"), url=source.get("url"))


def _result_content(content: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """`tool_result.content`: a string, or text/image blocks (images become placeholders)."""
    if not isinstance(content, list):
        return as_text(content), []
    texts, parts = [], []
    for b in content:
        if isinstance(b, dict) and b.get("type") == "image":
            text, part = _image(b)
            texts.append(text)
            parts.append(part)
        elif isinstance(b, dict) and b.get("type") == "text":
            texts.append(str(b.get("text") or ""))
        else:
            texts.append(as_text(b) or "")
    return "\n".join(texts), parts


class _Session:
    """One thread of records (the main session, a sidechain or a subagent) rendered to messages."""

    def __init__(self, notes: Counter[str]):
        self.notes = notes
        self.asm = Assembler(CallLinker(notes), notes)
        self.call_names: dict[str, str] = {}

    def assistant(self, recs: list[dict[str, Any]]) -> None:
        """All records of one API message (same `message.id`): blocks in order, usage of the last."""
        last = recs[-1]["message"]
        usage = last.get("usage") if isinstance(last.get("usage"), dict) else {}
        cache = {k: usage[k] for k in CACHE_KEYS if isinstance(usage.get(k), int)}
        meta = make_meta(timestamp=recs[0].get("timestamp"), model=last.get("model"), usage=usage,
                         finish_reason=last.get("stop_reason"), message_id=last.get("id"),
                         request_id=recs[0].get("requestId"), **cache)
        self.asm.begin()
        for rec in recs:
            content = rec["message"].get("content")
            for j, b in enumerate(content if isinstance(content, list) else [content]):
                with at("message.content", j):
                    self._assistant_block(b)
        self.asm.end("assistant", meta)

    def _assistant_block(self, b: Any) -> None:
        if isinstance(b, str):
            self.asm.text("assistant", b)
            return
        kind = b.get("type")
        if kind == "text":
            self.asm.text("assistant", b.get("text"))
        elif kind == "thinking":
            self.asm.reasoning("assistant", b.get("thinking"))
        elif kind in ("tool_use", "server_tool_use"):
            self.call_names[str(b.get("id"))] = b["name"]
            self.asm.call("assistant", b.get("id"), b["name"], b.get("input"))
        elif kind == "image":
            text, part = _image(b)
            self.asm.text("assistant", text)
            self.asm.keep("assistant", part)
        else:  # redacted_thinking, server tool results, …: kept verbatim, not interpreted
            self.asm.keep("assistant", b)

    def user(self, rec: dict[str, Any]) -> None:
        flags = {"cli_injected": True if rec.get("isMeta") else None,
                 "compact_summary": True if rec.get("isCompactSummary") else None}
        meta = make_meta(timestamp=rec.get("timestamp"), **flags)
        content = rec["message"].get("content")
        self.asm.begin()
        for j, b in enumerate(content if isinstance(content, list) else [content]):
            with at("message.content", j):
                if isinstance(b, str) or b.get("type") == "text":
                    self.asm.text("user", b if isinstance(b, str) else b.get("text"))
                elif b.get("type") == "tool_result":
                    self._result(b, rec)
                elif b.get("type") == "image":
                    text, part = _image(b)
                    self.asm.text("user", text)
                    self.asm.keep("user", part)
                else:
                    self.asm.keep("user", b)
        self.asm.end("user", meta)

    def _result(self, b: dict[str, Any], rec: dict[str, Any]) -> None:
        text, parts = _result_content(b.get("content"))
        call_id = b.get("tool_use_id")
        self.asm.result(call_id, text, name=self.call_names.get(str(call_id)), is_error=bool(b.get("is_error")))
        extra = {"tool_use_result": rec.get("toolUseResult"), "parts": parts or None,
                 "subagent_id": (rec.get("toolUseResult") or {}).get("agentId")
                 if isinstance(rec.get("toolUseResult"), dict) else None}
        meta = make_meta(timestamp=rec.get("timestamp"), **extra)
        self.asm.messages[-1] = self.asm.messages[-1].model_copy(update={"meta": meta})


def _thread_key(rec: dict[str, Any], roots: dict[str, str]) -> tuple[str, str | None]:
    """("main", None), ("agent", agentId) for a 2.x subagent file, or ("sidechain", root uuid)."""
    if not rec.get("isSidechain"):
        return "main", None
    if rec.get("agentId"):
        return "agent", str(rec["agentId"])
    parent, uuid = rec.get("parentUuid"), str(rec.get("uuid"))
    root = roots.get(str(parent), uuid) if parent else uuid
    roots[uuid] = root
    return "sidechain", root


def _units(recs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records grouped into source messages: assistant records by `message.id` (at the position of
    the first one), every user record on its own."""
    units: list[list[dict[str, Any]]] = []
    by_id: dict[str, list[dict[str, Any]]] = {}
    for rec in recs:
        mid = rec["message"].get("id") if rec.get("type") == "assistant" else None
        if mid is not None and mid in by_id:
            by_id[mid].append(rec)
            continue
        units.append([rec])
        if mid is not None:
            by_id[mid] = units[-1]
    return units


def _session_id(main: list[dict[str, Any]], file: str | None) -> str | None:
    """The file's own session: its name when a record carries it (a continued session's first
    records carry the previous id), else the last id seen."""
    ids = [str(r["sessionId"]) for r in main if r.get("sessionId")]
    stem = PurePath(file).stem if file else None
    return stem if stem in ids else (ids[-1] if ids else None)


def _bookkeeping(books: list[dict[str, Any]], uuids: set[str], notes: Counter[str]) -> dict[str, Any]:
    summaries = [b["summary"] for b in books if b.get("type") == "summary" and b.get("leafUuid") in uuids]
    foreign = sum(b.get("type") == "summary" for b in books) - len(summaries)
    if foreign:
        notes["summaries_of_other_sessions"] += foreign
    snaps = [{"message_id": b.get("messageId"), "timestamp": (b.get("snapshot") or {}).get("timestamp"),
              "files": len((b.get("snapshot") or {}).get("trackedFileBackups") or {})}
             for b in books if b.get("type") == "file-history-snapshot"]
    compactions = [{k: b.get(k) for k in ("timestamp", "compactMetadata", "uuid")} for b in books
                   if b.get("type") == "system" and b.get("subtype") == "compact_boundary"]
    kinds = Counter(str(b.get("type")) for b in books)
    return {"summaries": summaries or None, "file_history_snapshots": snaps or None,
            "compactions": compactions or None, "bookkeeping_records": dict(sorted(kinds.items())) or None}


def convert(src: Source, ctx: Context) -> Iterator[Item]:
    records, errors = whole_file(src)
    yield from errors
    threads: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    books: list[dict[str, Any]] = []
    roots: dict[str, str] = {}
    for rec in records:
        v = rec.value
        if isinstance(v, dict) and v.get("type") in MESSAGE_TYPES and isinstance(v.get("message"), dict):
            threads.setdefault(_thread_key(v, roots), []).append(v)
        else:
            books.append(v)
    main = threads.get(("main", None), [])
    sid = _session_id(main, ctx.file) or _session_id([r for t in threads.values() for r in t], None)
    uuids = {str(r.get("uuid")) for t in threads.values() for r in t}
    parent_tid = stable_id(ctx.fmt, sid)
    task_prompts: dict[str, str] = {}
    for (kind, key), recs in threads.items():
        notes: Counter[str] = Counter()
        session = _Session(notes)
        for unit in _units(recs):
            if unit[0]["type"] == "assistant":
                session.assistant(unit)
            else:
                session.user(unit[0])
        messages = session.asm.messages
        if kind == "main":
            task_prompts.update({c.id: c.arguments for m in messages for c in m.tool_calls if c.name == "Task"})
        meta = _bookkeeping(books, uuids, notes) if kind == "main" else {}
        tid = parent_tid if kind == "main" else stable_id(ctx.fmt, sid, kind, key)
        yield _trajectory(ctx, tid, sid, messages, recs, notes, parent=None if kind == "main" else parent_tid,
                          subagent_kind=None if kind == "main" else kind,
                          parent_tool_call_id=_task_call(messages, task_prompts) if kind == "sidechain" else None,
                          original=books if kind == "main" else [], **meta)


def _task_call(messages: list[Message], task_prompts: dict[str, str]) -> str | None:
    """The parent's `Task` call whose prompt is this sidechain's first user text (the only link)."""
    first = next((m.content for m in messages if m.role == "user" and m.content), None)
    return next((cid for cid, args in task_prompts.items() if first and first in args), None)


def _trajectory(ctx: Context, tid: str, sid: str | None, messages: list[Message], recs: list[dict[str, Any]],
                notes: Counter[str], *, parent: str | None, original: Any, **meta: Any) -> Item:
    models = Counter(str(r["message"]["model"]) for r in recs
                     if r.get("type") == "assistant" and r["message"].get("model") not in (None, "<synthetic>"))
    messages, pending = mark_unanswered(messages)
    usage = Counter()
    for m in messages:
        if m.role == "assistant" and m.meta is not None:
            usage["input_tokens"] += m.meta.input_tokens or 0
            usage["output_tokens"] += m.meta.output_tokens or 0
            for k in CACHE_KEYS:
                usage[k] += int(getattr(m.meta, k, None) or 0)
    last = recs[-1]
    return build_trajectory(
        ctx, trajectory_id=tid, messages=messages, original=original, agent="claude-code",
        agent_version=last.get("version"), model=models.most_common(1)[0][0] if models else None,
        session_id=sid, started_at=first_time([r.get("timestamp") for r in recs]),
        ended_at=last_time([r.get("timestamp") for r in recs]), notes=notes,
        cwd=last.get("cwd"), git_branch=last.get("gitBranch") or None, cli_version=last.get("version"),
        slug=last.get("slug"), parent_trajectory_id=parent, unanswered_tool_calls=pending or None,
        usage=dict(usage) or None, **meta)

