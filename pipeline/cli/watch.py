"""`tracemill watch`: live capture from Claude Code and Codex session folders (see pipeline.capture.watch).

Mounted on the main app with `app.command("watch")(watch)`. The loop lives in the capture stage; this
module wires it to a sink (a local workspace or a capture server) and, with `--redact`, to the
redactor of the corpus stage. That glue sits here, in the CLI, because the CLI is the one room that
may import both: capture must stay below corpus, and moving the redactor down would split the one
place where redaction rules live. Redaction happens before `write_trajectories`, so with `--server`
no secret leaves the machine.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from pipeline.capture.watch import (
    LocalSink,
    Prepare,
    RemoteSink,
    Sink,
    Watcher,
    WatchStats,
    claude_root,
    codex_root,
    default_claude_root,
    default_codex_root,
)
from pipeline.capture.watch_cursor import CursorStore
from pipeline.capture.workspace import Workspace, home_dir
from pipeline.corpus.redact import Redactor
from pipeline.schema import Trajectory

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[str | None, typer.Option("--home", envvar="TRACEMILL_HOME", help="tracemill home folder.")]
KEEP_METADATA = frozenset({"source", "source_file", "time_source", "parent_trajectory_id", "subagent_kind"})


def _redact_value(redactor: Redactor, value: Any) -> Any:
    """Every string inside `value` redacted; keys and non-strings kept."""
    if isinstance(value, str):
        return redactor.redact_text(value)[0]
    if isinstance(value, dict):
        return {k: _redact_value(redactor, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(redactor, v) for v in value]
    return value


def redacting(redactor: Redactor) -> Prepare:
    """A `prepare` hook that redacts a trajectory: message text and tool payloads (the redactor's own
    rules), plus step metadata and trajectory metadata, which a session also fills with tool output
    (Claude Code's `toolUseResult`, Bash stdout) that the message-level rules leave alone."""

    def prepare(traj: Trajectory) -> Trajectory:
        data = traj.model_dump(mode="json")
        messages, _ = redactor.redact_messages(data["messages"])
        for m in messages:
            if m.get("meta"):
                m["meta"] = _redact_value(redactor, m["meta"])
        meta = {k: v if k in KEEP_METADATA else _redact_value(redactor, v) for k, v in data["metadata"].items()}
        meta["redacted"] = True
        return Trajectory.model_validate({**data, "messages": messages, "metadata": meta})

    return prepare


def default_state(home: str | None, workspace: str, server: str | None) -> Path:
    """One cursor per destination, so watching into two workspaces (or servers) never shares state."""
    key = hashlib.sha1(f"{server or 'local'}|{workspace}".encode()).hexdigest()[:10]
    return home_dir(home) / "watch" / f"{workspace}-{key}.cursor.json"


def _status(stats: WatchStats, roots: int, where: str) -> Text:
    last = time.strftime("%H:%M:%S", time.localtime(stats.last_ship)) if stats.last_ship else "never"
    text = Text.assemble(("watching ", "bold"), f"{roots} folder(s) → {where} · ",
                         f"{stats.files_seen} session files · {len(stats.sessions)} sessions shipped "
                         f"({stats.shipped} versions, last {last})")
    if stats.bad_lines:
        text.append(f" · {stats.bad_lines} unreadable lines", style="yellow")
    text.append(" · last error: ", style="dim")
    text.append(stats.last_error or "none", style="red" if stats.last_error else "dim")
    return text


def watch(
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace to ship into (created if missing "
                                                                     "when local).")],
    claude: Annotated[list[Path] | None, typer.Option("--claude-root", help="Claude Code projects folder "
                      "(repeatable). Default ~/.claude/projects when no root is given.")] = None,
    codex: Annotated[list[Path] | None, typer.Option("--codex-root", help="Codex sessions folder (repeatable). "
                     "Default ~/.codex/sessions when no root is given.")] = None,
    server: Annotated[str | None, typer.Option("--server", help="Capture server URL; default: the local "
                                                               "workspace.")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="TRACEMILL_TOKEN", help="API token for "
                                                                                      "--server.")] = None,
    redact: Annotated[bool, typer.Option("--redact", help="Redact secrets and PII before anything is "
                                                          "written or sent.")] = False,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between passes.")] = 2.0,
    state: Annotated[Path | None, typer.Option("--state", help="Cursor file (default under the home's "
                                                               "watch/ folder).")] = None,
    home: HomeOpt = None,
    json: Annotated[bool, typer.Option("--json", help="With --once: a machine-readable summary.")] = False,
) -> None:
    """Follow Claude Code and Codex session folders and ship new and grown sessions as they change."""
    from pipeline.capture.remote_sdk import RemoteWorkspace

    roots = [claude_root(p) for p in claude or []] + [codex_root(p) for p in codex or []]
    if not roots:
        roots = [claude_root(default_claude_root()), codex_root(default_codex_root())]
    try:
        target: Any = (RemoteWorkspace(server, workspace, token) if server
                       else Workspace.open(workspace, home=home))
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    sink: Sink = RemoteSink(target) if server else LocalSink(target)
    cursor = CursorStore(state or default_state(home, workspace, server))
    watcher = Watcher(roots, sink, cursor, prepare=redacting(Redactor()) if redact else None)
    where = f"{server}/{workspace}" if server else f"workspace {workspace}"
    try:
        if once:
            watcher.run_once()
        else:
            _loop(watcher, interval, len(roots), where)
    finally:
        target.close()
    stats = watcher.stats
    if json:
        sys.stdout.write(orjson.dumps({"files": stats.files_seen, "sessions": len(stats.sessions),
                                       "shipped": stats.shipped, "bad_lines": stats.bad_lines,
                                       "last_error": stats.last_error}).decode() + "\n")
    elif once:
        console.print(_status(stats, len(roots), where))
    if once and stats.last_error and not stats.shipped:
        raise typer.Exit(1)


def _loop(watcher: Watcher, interval: float, roots: int, where: str) -> None:
    """Foreground loop: a live status line on a terminal, one log line per pass that did something
    otherwise (under systemd the journal gets the history). SIGTERM and Ctrl-C stop after the pass."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if console.is_terminal:
        with Live(_status(watcher.stats, roots, where), console=console, auto_refresh=False) as live:
            watcher.run(interval, stop, lambda s: live.update(_status(s, roots, where), refresh=True))
        return
    last: tuple[int, str | None] = (0, None)

    def log(stats: WatchStats) -> None:
        nonlocal last
        if (stats.shipped, stats.last_error) != last:
            last = (stats.shipped, stats.last_error)
            console.print(_status(stats, roots, where), soft_wrap=True)

    watcher.run(interval, stop, log)
