"""`make ui`: the Dagster webserver + daemon and the MLflow UI, started together and stopped together.

    python -m assets.dev.ui [--home H] [--dagster-port 3000] [--mlflow-port 5000] [--no-mlflow]

Why a launcher instead of `dagster dev &` in the Makefile: a shell that starts `dagster dev` with `&`
leaves SIGINT ignored in it (no job control), and `dagster dev` maps SIGTERM onto the SIGINT
handler, so it ignores SIGTERM too and outlives whoever started it. Here each service runs in its
own session and process group (its webserver, daemon, code servers and run workers inherit the
group); this process installs its own SIGINT/SIGTERM handlers *before* spawning (so the children
exec with default handlers), and on Ctrl-C or SIGTERM sends SIGTERM to each whole group, then
SIGKILL to whatever is left after `--stop-timeout` seconds. Nothing is left behind.

Loopback only: both servers bind 127.0.0.1. Each service's output goes to `<home>/logs/<name>.log`.
Nothing here imports Dagster or MLflow: the launcher is up in milliseconds and stays small.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from assets.instance import DEFINITIONS_MODULE, dagster_home_for, ensure_dagster_home
from pipeline.capture.workspace import home_dir

HOST = "127.0.0.1"


@dataclass
class Service:
    """A child server: how to start it, where it answers, and its process (group leader)."""

    name: str
    cmd: list[str]
    port: int
    ready_path: str
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def dagster_service(port: int, home: Path) -> Service:
    # `-m`, not `-w workspace.yaml`: the code location is the installed module (no source checkout
    # needed), and its name is the module's, as the repository's workspace.yaml names it too
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", DEFINITIONS_MODULE, "-h", HOST, "-p", str(port)]
    return Service("dagster", cmd, port, "/server_info", home / "logs" / "dagster.log")


def mlflow_service(port: int, home: Path) -> Service:
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
           "--host", HOST, "--port", str(port)]
    return Service("mlflow", cmd, port, "/health", home / "logs" / "mlflow.log")


LOCATIONS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def code_locations(url: str, timeout: float = 60) -> list[tuple[str, str]]:
    """(location, "loaded" or its load error) once the webserver finished loading every location:
    /server_info answers before the definitions are imported, and an import error shows only here."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request(url + "/graphql", data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                entries = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return [(e["name"], e["locationOrLoadError"].get("message") or "loaded") for e in entries]
        except (OSError, KeyError, TypeError, ValueError):
            pass
        if time.monotonic() > deadline:
            return [("?", f"code locations not loaded after {timeout:.0f} s")]
        time.sleep(0.5)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_all(services: list[Service], timeout: float) -> None:
    """SIGTERM every group at once, wait until each group is empty, SIGKILL the stragglers."""
    groups = {s.proc.pid: s for s in services if s.proc}  # session leader: pgid == pid
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in groups.values():
            s.exited()  # reap the leader so an exited one is not counted as alive
        if not any(_group_alive(g) for g in groups):
            return
        time.sleep(0.2)
    for pgid, s in groups.items():
        if _group_alive(pgid):
            print(f"{s.name}: still running after {timeout:.0f} s, killing its process group", flush=True)
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        s.proc.wait()


def wait_ready(services: list[Service], timeout: float, stop: threading.Event) -> Service | None:
    """None when every service answers; else the one that died or did not answer in time."""
    pending = list(services)
    deadline = time.monotonic() + timeout
    while pending and not stop.is_set():
        for s in list(pending):
            if s.exited() is not None:
                return s
            if s.answers():
                pending.remove(s)
        if time.monotonic() > deadline:
            return pending[0]
        stop.wait(0.5)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m assets.dev.ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--home", default=env("TRACEMILL_HOME"), help="tracemill home (default ./.tracemill)")
    p.add_argument("--dagster-port", type=int, default=int(env("TRACEMILL_DAGSTER_PORT", "3000")))
    p.add_argument("--mlflow-port", type=int, default=int(env("TRACEMILL_MLFLOW_PORT", "5000")))
    p.add_argument("--no-mlflow", action="store_true", help="start only Dagster")
    p.add_argument("--ready-timeout", type=float, default=float(env("TRACEMILL_UI_READY_TIMEOUT", "120")))
    p.add_argument("--stop-timeout", type=float, default=float(env("TRACEMILL_UI_STOP_TIMEOUT", "20")))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = home_dir(args.home)
    dagster_home = ensure_dagster_home(dagster_home_for(home))
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # its job runner: 8 processes, unused here
           **os.environ, "TRACEMILL_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "DAGSTER_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    services = [dagster_service(args.dagster_port, home)]
    if not args.no_mlflow:
        services.append(mlflow_service(args.mlflow_port, home))
    busy = [s for s in services if not port_free(s.port)]
    if busy:
        print(f"port {busy[0].port} on {HOST} is in use (is `make ui` already running?); "
              f"pick another with --{busy[0].name}-port", file=sys.stderr)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before spawning: children exec with default handlers
        signal.signal(sig, lambda *_: stop.set())
    for s in services:
        s.start(env)
    code = 0
    try:
        failed = wait_ready(services, args.ready_timeout, stop)
        if failed is not None:
            state = f"exited with {failed.exited()}" if failed.exited() is not None else "did not answer in time"
            print(f"{failed.name} {state}; last lines of {failed.log}:\n{failed.log_tail()}", file=sys.stderr)
            return 1
        if stop.is_set():
            return 0
        for name, status in code_locations(services[0].url):
            print(f"code location {name}: {status}", flush=True)
        for s in services:
            print(f"{s.name:8} {s.url}", flush=True)
        print(f"home {home} · DAGSTER_HOME {dagster_home} · logs {home / 'logs'}", flush=True)
        print("tracemill ui ready: Ctrl-C stops everything", flush=True)
        while not stop.wait(1.0):
            dead = next((s for s in services if s.exited() is not None), None)
            if dead:
                print(f"{dead.name} exited with {dead.exited()}; stopping the rest. Last lines of {dead.log}:\n"
                      f"{dead.log_tail()}", file=sys.stderr)
                code = 1
                break
        return code
    finally:
        print("stopping …", flush=True)
        stop_all(services, args.stop_timeout)
        print("stopped", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
