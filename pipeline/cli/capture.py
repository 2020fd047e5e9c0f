"""CLI for the production capture path: `tracemill serve` and `tracemill token create|list|revoke`.

Mounted on the main CLI (`pipeline.cli`) with `app.command("serve")(serve)` and
`app.add_typer(token_app, name="token")`; kept apart so the server's imports stay out of the rest.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated

import orjson
import typer
from rich.table import Table

from pipeline.capture.workspace import home_dir
from pipeline.cli.common import HomeOpt, JsonOpt, console, err, fail
from pipeline.server import auth

token_app = typer.Typer(help="Create, list and revoke API tokens of the capture server.", no_args_is_help=True)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*\Z", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'16MB', '512k', '1048576' → bytes (binary multiples: a limit, not a marketing figure)."""
    m = _SIZE.match(text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a size such as 16MB, 512KB or 1048576")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit])


def serve(host: Annotated[str, typer.Option(help="Interface to bind; keep loopback unless a TLS proxy fronts it.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8470,
          max_body: Annotated[str, typer.Option("--max-body", help="Largest request body accepted (413 above).")] = "16MB",
          no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept requests without a token (loopback only).")] = False,
          log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
          body_timeout: Annotated[float, typer.Option(
              "--body-timeout", help="Seconds a request body may stall before a 408 (10x that in all).")] = 30.0,
          home: HomeOpt = None):
    """Run the capture server: agents POST trajectories, outcomes, preferences and OTLP traces."""
    from pipeline.server.app import serve as run_server

    if no_auth and host not in ("127.0.0.1", "localhost", "::1"):
        fail("--no-auth is only allowed on a loopback interface", code=2)
    limit = parse_size(max_body)
    if not no_auth and not auth.list_tokens(home):
        err.print("[yellow]no API tokens yet:[/] create one with `tracemill token create WORKSPACE --role writer`")
    console.print(f"tracemill capture server on http://{host}:{port} (home {home_dir(home)}, max body {limit} bytes)")
    run_server(host, port, home=home, max_body_bytes=limit, require_auth=not no_auth, log_level=log_level,
               body_timeout_s=body_timeout)


@token_app.command("create")
def token_create(workspace: Annotated[str, typer.Argument(help="Workspace the token is for ('*' for admin).")] = "*",
                 role: Annotated[str, typer.Option(help="writer | reader | admin")] = "writer",
                 label: Annotated[str, typer.Option(help="A note to recognise the token by.")] = "",
                 home: HomeOpt = None, json: JsonOpt = False):
    """Create a token. It is printed once: only a salted hash is kept."""
    try:
        token = auth.create_token(home, workspace, role, label=label)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:  # an unwritable or full home: say where, not a traceback
        fail(f"cannot write the token store {auth.tokens_path(home)}: {exc.strerror or exc}")
    if json:
        sys.stdout.write(orjson.dumps({"token": token, "workspace": workspace, "role": role}).decode() + "\n")
        return
    err.print(f"created token ({role} of {workspace!r}); it is shown only this once:")
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list(workspace: Annotated[str | None, typer.Argument(help="Only this workspace's tokens.")] = None,
               home: HomeOpt = None, json: JsonOpt = False):
    """List tokens (ids, workspaces, roles; never secrets)."""
    infos = auth.list_tokens(home, workspace)
    if json:
        sys.stdout.write(orjson.dumps([i.public() for i in infos]).decode() + "\n")
        return
    if not infos:
        console.print("no tokens: `tracemill token create WORKSPACE --role writer`")
        return
    table = Table("id", "workspace", "role", "created", "label")
    for i in infos:
        table.add_row(i.token_id, i.workspace, i.role, i.created_at, i.label)
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="Token id (from `token list`) or the token.")],
                 home: HomeOpt = None):
    """Revoke a token; the running server refuses it on the next request."""
    if not auth.revoke(home, token_id):
        fail(f"no token {token_id!r}")
    console.print(f"revoked {token_id}")


if __name__ == "__main__":  # `python -m pipeline.cli.capture` until it is mounted on the main CLI
    cli = typer.Typer(no_args_is_help=True)
    cli.command("serve")(serve)
    cli.add_typer(token_app, name="token")
    cli()
