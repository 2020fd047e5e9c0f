"""`tracemill watch`: live capture from fake `~/.claude/projects` and `~/.codex/sessions` trees.

The main test runs the watcher as a real subprocess while records are appended, SIGKILLs it at
seeded random points, restarts it, and checks that the lake holds every session exactly once with
all its messages. It waits on conditions (the cursor file changed, the landing caught up), never on
sleeps alone; the short seeded sleeps before a kill only vary *where* the kill lands.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from pipeline.capture.landing import read_landed
from pipeline.capture.watch import LocalSink, Watcher, claude_root, codex_root
from pipeline.capture.watch_cursor import CursorStore, whole_lines
from pipeline.capture.workspace import Workspace
from pipeline.lake.ingest import ingest_trajectories
from tests.coding_sessions import DAY, claude_text_turn, codex_line, session_ids, write_lines

ROOT = Path(__file__).resolve().parents[1]


class Tree:
    """A fake home with Claude Code and Codex sessions that grow by a seeded random plan."""

    def __init__(self, base: Path, rng: random.Random, n_claude: int = 4, n_codex: int = 3, lines: int = 24):
        self.claude = base / ".claude" / "projects"
        self.codex = base / ".codex" / "sessions"
        self.files: dict[str, tuple[Path, Callable[[str, int], dict]]] = {}
        for sid in session_ids(n_claude, "claude"):
            self.files[f"claude_code:{sid}"] = (self.claude / "-work-proj" / f"{sid}.jsonl", claude_text_turn)
        for sid in session_ids(n_codex, "codex"):
            path = self.codex / "2026" / "03" / "02" / f"rollout-2026-03-02T10-00-00-{sid}.jsonl"
            self.files[f"codex:{sid}"] = (path, codex_line)
        self.plan = [tid for tid in self.files for _ in range(lines)]
        rng.shuffle(self.plan)
        self.written: dict[str, int] = dict.fromkeys(self.files, 0)

    def append(self, n: int) -> None:
        for tid in self.plan[:n]:
            path, line = self.files[tid]
            write_lines(path, [line(tid.split(":", 1)[1], self.written[tid])])
            self.written[tid] += 1
        del self.plan[:n]

    def expected(self) -> dict[str, int]:
        """Messages per trajectory id: every Claude line is a message; Codex's first line is metadata."""
        return {tid: n - tid.startswith("codex:") for tid, n in self.written.items() if n}


def latest_landed(ws: Workspace) -> dict[str, int]:
    """Messages of the newest landed version of each trajectory (torn lines from a kill are skipped)."""
    best: dict[str, tuple[int, int]] = {}
    for line in read_landed(ws.landing, "trajectory"):
        if line.error is None:
            tid = line.record["trajectory_id"]
            if tid not in best or line.received_ns >= best[tid][0]:
                best[tid] = (line.received_ns, len(line.record["messages"]))
    return {tid: n for tid, (_, n) in best.items()}


def wait_for(cond: Callable[[], bool], what: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"watcher exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def watch_cmd(tree: Tree, home: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "watch", "-w", "live", "--home", str(home),
            "--claude-root", str(tree.claude), "--codex-root", str(tree.codex), *extra]


def test_watcher_survives_sigkill_and_ships_every_session_exactly_once(tmp_path):
    rng = random.Random(20261202)
    tree, home = Tree(tmp_path / "user", rng), tmp_path / "tm"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACEMILL_HOME": str(home)}
    state = home / "cursor.json"
    cmd = watch_cmd(tree, home, "--interval", "0.02", "--state", str(state))
    log = (tmp_path / "watch.log").open("ab")

    def start() -> tuple[subprocess.Popen, bytes]:
        before = state.read_bytes() if state.exists() else b""
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log), before

    proc, before = start()
    kills = 0
    while tree.plan:
        tree.append(rng.randint(1, 10))
        if rng.random() < 0.3 and kills < 6:
            # progress first (this process saved its cursor at least once), then a kill at a random point
            wait_for(lambda b=before: state.exists() and state.read_bytes() != b, "a cursor save", proc)
            time.sleep(rng.uniform(0, 0.04))
            proc.kill()
            proc.wait()
            kills += 1
            proc, before = start()
    ws = Workspace("live", home)
    wait_for(lambda: latest_landed(ws) == tree.expected(), "the landing to catch up", proc)
    proc.terminate()  # SIGTERM: the pass in flight finishes and saves its cursor
    assert proc.wait(timeout=60) == 0
    assert kills >= 4

    again = subprocess.run([*watch_cmd(tree, home, "--state", str(state)), "--once", "--json"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["shipped"] == 0  # the cursor says everything is shipped already
    df, stats = ingest_trajectories(ws, DAY)
    assert ws.days("trajectory") == [DAY]
    assert sorted(df["trajectory_id"].to_list()) == sorted(tree.expected())  # every session, exactly once
    assert dict(zip(df["trajectory_id"], df["n_messages"], strict=True)) == tree.expected()


def test_once_ships_new_and_grown_sessions_and_skips_unchanged(tmp_path):
    tree = Tree(tmp_path / "user", random.Random(7), n_claude=2, n_codex=1, lines=6)
    tree.append(9)
    ws = Workspace.open("w", tmp_path / "tm")
    cursor = CursorStore(tmp_path / "c.json")
    w = Watcher([claude_root(tree.claude), codex_root(tree.codex)], LocalSink(ws), cursor)
    assert w.run_once() == len(tree.expected())
    assert w.run_once() == 0
    tid = "codex:" + session_ids(1, "codex")[0]
    path, line = tree.files[tid]
    text = orjson.dumps(line(tid.split(":", 1)[1], tree.written[tid])).decode() + "\n"
    with path.open("a") as fh:  # a line still being written is not shipped
        fh.write(text[:20])
    assert w.run_once() == 0
    with path.open("a") as fh:
        fh.write(text[20:])
    tree.written[tid] += 1
    assert w.run_once() == 1
    tree.append(len(tree.plan))
    assert w.run_once() == len(tree.expected())
    assert latest_landed(ws) == tree.expected()
    assert CursorStore(tmp_path / "c.json").files.keys() == cursor.files.keys()


def test_whole_lines_keeps_only_complete_lines():
    assert whole_lines(b'{"a":1}\n{"b"') == b'{"a":1}\n'
    assert whole_lines(b'{"a"') == b""


def test_redact_removes_secrets_before_writing(tmp_path):
    from pipeline.cli.watch import redacting
    from pipeline.corpus.redact import Redactor
    from tests.coding_sessions import claude_assistant, claude_user

    secret = "sk-ant-api03-" + "Ab3dEf5hIj7lMn9pQr" * 3
    sid = session_ids(1, "redact")[0]
    path = tmp_path / "projects" / "p" / f"{sid}.jsonl"
    call = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": f"export KEY={secret}"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"KEY={secret}"}
    write_lines(path, [claude_user(sid, 0, f"my key is {secret}"), claude_assistant(sid, 1, [call]),
                       {**claude_user(sid, 2, [result]), "toolUseResult": {"stdout": f"KEY={secret}"}}])
    ws = Workspace.open("w", tmp_path / "tm")
    w = Watcher([claude_root(tmp_path / "projects")], LocalSink(ws), CursorStore(tmp_path / "c.json"),
                prepare=redacting(Redactor()))
    assert w.run_once() == 1
    ws.close()
    landed = b"".join(p.read_bytes() for p in ws.landing.rglob("*.ndjson"))
    assert secret.encode() not in landed and b"REDACTED" in landed


def test_ships_to_a_capture_server(tmp_path):
    from pipeline.capture.remote_sdk import RemoteWorkspace
    from pipeline.capture.watch import RemoteSink
    from tests.capture_helpers import ThreadServer

    tree = Tree(tmp_path / "user", random.Random(3), n_claude=1, n_codex=1, lines=4)
    tree.append(8)
    server = ThreadServer(tmp_path / "srv", require_auth=False).start()
    try:
        Workspace.create("live", tmp_path / "srv")
        remote = RemoteWorkspace(server.url, "live")
        w = Watcher([claude_root(tree.claude), codex_root(tree.codex)], RemoteSink(remote),
                    CursorStore(tmp_path / "c.json"))
        assert w.run_once() == 2 and w.stats.last_error is None
        remote.close()
    finally:
        server.stop()
    assert latest_landed(Workspace("live", tmp_path / "srv")) == tree.expected()


def test_missing_roots_are_not_an_error(tmp_path):
    ws = Workspace.open("w", tmp_path / "tm")
    w = Watcher([claude_root(tmp_path / "nope")], LocalSink(ws), CursorStore(tmp_path / "c.json"))
    assert w.run_once() == 0 and w.stats.files_seen == 0
