"""Per-app state of the capture server: who may do what (bearer tokens per workspace and role), which
workspace a request names, the request body limit, the group committer and per-open-trajectory locks.

Why apart from the routes: every route starts with the same authorize → workspace → body steps; here
they are one object the routes share, tested and read without the HTTP plumbing around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Request

from pipeline.capture.workspace import Workspace, check_name
from pipeline.server.auth import TokenInfo, TokenStore
from pipeline.server.group_commit import GroupCommitter
from pipeline.server.request_io import fail, read_body


class ServerState:
    """Per-app state: token cache, the group committer, per-open-trajectory locks."""

    def __init__(self, home: Path, max_body: int, require_auth: bool, body_timeout_s: float = 30.0):
        self.home, self.max_body, self.require_auth = home, max_body, require_auth
        self.body_timeout_s = body_timeout_s
        self.tokens = TokenStore(home)
        self.committer = GroupCommitter(home)
        self.locks: dict[tuple[str, str], list[Any]] = {}

    # ---- auth & workspaces ----------------------------------------------------------------------
    def authorize(self, request: Request, workspace: str | None, role: str) -> TokenInfo | None:
        if not self.require_auth:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header or scheme.lower() != "bearer":
            raise fail(401, "missing API token: send `Authorization: Bearer tm_…`", **{"WWW-Authenticate": "Bearer"})
        try:
            info = self.tokens.verify(token.strip())
        except ValueError as exc:
            raise fail(503, f"token store unreadable: {exc}") from None
        if info is None:
            raise fail(401, "invalid or revoked API token", **{"WWW-Authenticate": "Bearer"})
        if workspace is not None and not info.allows(workspace, role):
            raise fail(403, f"token {info.token_id} ({info.role} of {info.workspace!r}) may not "
                             f"{'write to' if role == 'writer' else 'read'} workspace {workspace!r}")
        if workspace is None and role == "admin" and info.role != "admin":
            raise fail(403, f"managing workspaces needs an admin token (token {info.token_id} is {info.role})")
        return info

    def workspace(self, name: str) -> Workspace:
        try:
            ws = Workspace(check_name(name), self.home)
        except ValueError as exc:
            raise fail(400, str(exc)) from None
        if not ws.exists():
            raise fail(404, f"workspace {name!r} does not exist (an admin creates it: POST /v1/workspaces)")
        return ws

    async def body(self, request: Request) -> bytes:
        return await read_body(request, self.max_body, self.body_timeout_s)

    @asynccontextmanager
    async def lock(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """Serialises appends and close of one open trajectory (this process is its only writer)."""
        entry = self.locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self.locks.pop(key, None)
