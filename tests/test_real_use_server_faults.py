"""Issue 12, item 8: server faults. A body shorter than its Content-Length, clients that hang up, a full
disk, and the CLI's token/workspace commands on an unwritable home: each answered cleanly, in one line.

The full disk is a real 4 MiB tmpfs filled to the last byte where this process may mount one (root on
Linux), and ENOSPC injected at the OS boundary (os.write / os.fsync / os.replace on files under the
home) everywhere: both variants run the same assertions."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from pipeline.capture.workspace import Workspace
from pipeline.lake.ingest import ingest_trajectories, read_quarantine
from tests.capture_helpers import ROOT, ThreadServer

DAY = "2026-11-20"


def trajectory(tid: str, size: int = 2) -> dict:
    return {"trajectory_id": tid, "agent": "a", "started_at": f"{DAY}T09:00:00Z",
            "messages": [{"role": "user", "content": "h" * size}]}


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := condition()):
            return value
        time.sleep(0.02)
    raise TimeoutError(what)


# ---- a body shorter than its Content-Length ------------------------------------------------------------
def test_a_body_shorter_than_its_content_length_is_cut_off_with_408(tmp_path):
    Workspace.create("w", tmp_path)
    srv = ThreadServer(tmp_path, require_auth=False, body_timeout_s=0.5).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(b"POST /v1/workspaces/w/trajectories HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"trajectory_id\"")
            reply = sock.recv(65536)  # the server answers on its own: the client never sends the rest
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"Content-Length" in reply.split(b"\r\n\r\n", 1)[1] or b"body" in reply
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
    finally:
        srv.stop()


# ---- clients that hang up --------------------------------------------------------------------------------
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_abandoned_request_logs_one_line_and_no_traceback(tmp_path):
    Workspace.create("w", tmp_path)
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "tracemill.server", "uvicorn", "fastapi")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)  # the disconnect line is INFO: the client's doing, not the server's
    srv = ThreadServer(tmp_path, require_auth=False).start()
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
                sock.sendall(b"POST /v1/workspaces/w/trajectories HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 1000\r\n\r\n[{")
                time.sleep(0.05)
        wait_for(lambda: sum("disconnected" in r.getMessage() for r in handler.records) >= 3, what="3 log lines")
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
    finally:
        srv.stop()
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
    assert not [r for r in handler.records if r.exc_info], [r.getMessage() for r in handler.records if r.exc_info]
    lines = [r.getMessage() for r in handler.records if "disconnected" in r.getMessage()]
    assert len(lines) == 3 and all("\n" not in line for line in lines), lines


# ---- a full disk ------------------------------------------------------------------------------------------
class FullDisk:
    """`fill()` makes every write under `root` fail with ENOSPC, `free()` undoes it."""

    def __init__(self, root: Path, tmpfs: bool):
        self.root, self.tmpfs, self._patches = root, tmpfs, None

    def fill(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if self.tmpfs:
            with open(self.root / "filler", "wb", buffering=0) as fh:
                try:
                    while True:
                        fh.write(b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
            return
        root = str(self.root)

        def under_root(fd_or_path) -> bool:
            path = os.readlink(f"/proc/self/fd/{fd_or_path}") if isinstance(fd_or_path, int) else str(fd_or_path)
            return path.startswith(root)

        def failing(real):
            def call(target, *args, **kwargs):
                if under_root(target):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real(target, *args, **kwargs)
            return call

        for name in ("write", "fsync"):
            monkeypatch.setattr(os, name, failing(getattr(os, name)))
        real_replace = os.replace
        monkeypatch.setattr(os, "replace", lambda src, dst: _replace_or_fail(real_replace, src, dst, root))

    def free(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if self.tmpfs:
            (self.root / "filler").unlink()
        else:
            monkeypatch.undo()


def _replace_or_fail(real, src, dst, root: str):
    if str(dst).startswith(root):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(src, dst)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(tmp_path, request):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = request.param == "tmpfs" and sys.platform == "linux" and os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode == 0
    if request.param == "tmpfs" and not mounted:
        pytest.skip("no tmpfs can be mounted here: the injected variant covers it")
    yield FullDisk(mnt, mounted)
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_answers_503_everywhere_and_reuses_one_landing_file(disk, monkeypatch):
    home = disk.root / "home"
    ws = Workspace.create("w", home)
    srv = ThreadServer(home, require_auth=False).start()
    base = f"{srv.url}/v1/workspaces/w"
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.post("/trajectories", json=[trajectory("before")]).json()["accepted"] == 1
            assert c.post("/trajectories/s1/messages", json={"messages": [{"role": "user", "content": "a"}]}).status_code == 200
            disk.fill(monkeypatch)
            for i in range(20):
                r = c.post("/trajectories", json=[trajectory(f"lost-{i}", 9000)])  # more than a page
                assert r.status_code == 503 and "No space left" in r.json()["detail"], r.text
            for _ in range(5):
                r = c.post("/outcomes", json=[{"trajectory_id": "before", "value": 1.0, "label": "x" * 9000}])
                assert r.status_code == 503, r.text
                r = c.post("/trajectories/s1/messages", json={"messages": [{"role": "user", "content": "b" * 9000}]})
                assert r.status_code == 503 and "No space left" in r.json()["detail"], r.text
            disk.free(monkeypatch)
            assert c.post("/trajectories", json=[trajectory("after")]).json()["accepted"] == 1
            assert c.post("/trajectories/s1/messages", json={"messages": [{"role": "user", "content": "c"}]}).status_code == 200
            assert c.post("/trajectories/s1/close", json={"agent": "a", "started_at": f"{DAY}T10:00:00Z"}).status_code == 200
    finally:
        srv.stop()
    segments = list((ws.landing / "trajectory" / DAY).glob("*.ndjson"))
    assert len(segments) == 1, segments  # failed requests do not each open a new landing file
    df, stats = ingest_trajectories(ws, DAY)
    assert set(df["trajectory_id"]) == {"before", "after", "s1"} and stats.quarantined == 0
    assert read_quarantine(ws) == []
    msgs = orjson.loads(df.filter(df["trajectory_id"] == "s1")["messages_json"][0])
    assert [m["content"] for m in msgs] == ["a", "c"]


def test_ingest_on_a_full_disk_leaves_no_temp_files(disk, monkeypatch):
    ws = Workspace.create("w", disk.root / "home")
    ws.write_trajectories([trajectory(f"t{i}") for i in range(50)])
    disk.fill(monkeypatch)
    with pytest.raises(Exception, match="No space left"):  # polars wraps ENOSPC in its ComputeError
        ingest_trajectories(ws, DAY)
    disk.free(monkeypatch)
    assert [p.name for p in ws.root.rglob("*.tmp")] == []
    df, _ = ingest_trajectories(ws, DAY)
    assert df.height == 50


# ---- the CLI on a home it cannot write ---------------------------------------------------------------
def tm(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRACEMILL_HOME", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("args", [["token", "create", "w", "--role", "writer"], ["workspace", "create", "w"]])
def test_token_and_workspace_create_on_an_unwritable_home_print_one_line(tmp_path, args):
    home = tmp_path / "not-a-folder"
    home.write_text("a file where the home should be")
    r = tm(*args, "--home", str(home))
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr and r.stderr.count("\n") <= 2, r.stderr
    assert "error:" in r.stderr and str(home.name) in r.stderr, r.stderr


def test_ingest_sweeps_temp_files_of_killed_writers(tmp_path):
    ws = Workspace.create("w", tmp_path)
    ws.write_trajectories([trajectory("t1")])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = ws.raw_path(DAY)
    target.parent.mkdir(parents=True, exist_ok=True)
    stale = target.with_name(f".{target.name}.{int(dead.stdout)}.1.tmp")
    stale.write_bytes(b"half a parquet file")
    live = target.with_name(f".{target.name}.{os.getppid()}.1.tmp")  # a running writer's: kept
    live.write_bytes(b"in progress")
    ingest_trajectories(ws, DAY)
    assert not stale.exists() and live.exists()
