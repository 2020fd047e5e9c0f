"""API tokens for the capture server: per-workspace `writer` / `reader` tokens and global `admin` ones.

A token looks like `tm_<id>_<secret>`. Only a salted SHA-256 of the secret is stored, in
`<home>/auth/tokens.json` (mode 0600, replaced atomically under a file lock so the CLI and a running
server can both edit it). SHA-256 rather than scrypt on purpose: the secrets are 256 random bits, so
a slow KDF adds nothing against guessing, while the server verifies a token on every request.
The `<id>` part lets `verify` find the entry without scanning, and lets `list`/`revoke` name a
token without ever showing its secret again.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.capture.workspace import check_name, home_dir

ROLES = ("reader", "writer", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
ALL = "*"
PREFIX = "tm_"


@dataclass(frozen=True)
class TokenInfo:
    """What a verified token may do. `workspace` is '*' for admin tokens."""

    token_id: str
    workspace: str
    role: str
    created_at: str
    label: str = ""

    def allows(self, workspace: str | None, role: str) -> bool:
        """True when this token grants `role` (or more) on `workspace` (None: a global operation)."""
        if self.role == "admin":
            return True
        return workspace is not None and workspace == self.workspace and _RANK[self.role] >= _RANK[role]

    def public(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "workspace": self.workspace, "role": self.role,
                "created_at": self.created_at, "label": self.label}


def tokens_path(home: str | os.PathLike | None) -> Path:
    return home_dir(home) / "auth" / "tokens.json"


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def _load(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {"version": 1, "tokens": {}}
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), dict):
        raise ValueError(f"{path} is not a tracemill token store")
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write-temp, fsync, rename, fsync the folder: readers see the old or the new file, never half."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextmanager
def _editing(home: str | os.PathLike | None) -> Iterator[dict[str, Any]]:
    """Read-modify-write the store under an exclusive lock (CLI and server may edit concurrently)."""
    path = tokens_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent.stat().st_mode & 0o077:  # mkdir leaves an existing folder's mode as it was
        os.chmod(path.parent, 0o700)
    with open(path.parent / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _load(path)
        yield data
        _save(path, data)


def _info(token_id: str, entry: dict[str, Any]) -> TokenInfo:
    return TokenInfo(token_id, entry["workspace"], entry["role"], entry.get("created_at", ""), entry.get("label", ""))


def create_token(home: str | os.PathLike | None, workspace: str | None, role: str = "writer",
                 label: str = "") -> str:
    """Create a token and return it. This is the only time the secret is visible: store it now."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if role == "admin":
        if workspace not in (None, "", ALL):
            raise ValueError("admin tokens are global: pass '*' (or no workspace) for an admin token")
        workspace = ALL
    else:
        workspace = check_name(workspace or "")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    with _editing(home) as data:
        data["tokens"][token_id] = {
            "workspace": workspace, "role": role, "label": label, "salt": salt, "hash": _hash(salt, secret),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    return f"{PREFIX}{token_id}_{secret}"


class TokenStore:
    """A cached view of tokens.json for the server: re-read only when the file changes on disk."""

    def __init__(self, home: str | os.PathLike | None):
        self.path = tokens_path(home)
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: dict[str, Any] = {}

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._tokens = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._tokens = _load(self.path)["tokens"]
            self._stamp = stamp

    def verify(self, token: str | None) -> TokenInfo | None:
        """The token's grants, or None when it is malformed, unknown, revoked or wrong."""
        if not token or not token.startswith(PREFIX):
            return None
        token_id, sep, secret = token[len(PREFIX):].partition("_")
        if not sep or not secret:
            return None
        self._refresh()
        entry = self._tokens.get(token_id)
        if not isinstance(entry, dict):
            return None
        try:
            ok = hmac.compare_digest(_hash(entry["salt"], secret), entry["hash"])
        except (KeyError, ValueError, TypeError):
            return None
        return _info(token_id, entry) if ok else None


def verify(home: str | os.PathLike | None, token: str | None) -> TokenInfo | None:
    return TokenStore(home).verify(token)


def list_tokens(home: str | os.PathLike | None, workspace: str | None = None) -> list[TokenInfo]:
    """Every token (optionally only one workspace's), without salts, hashes or secrets."""
    tokens = _load(tokens_path(home))["tokens"]
    infos = [_info(tid, e) for tid, e in tokens.items()]
    return sorted((i for i in infos if workspace is None or i.workspace == workspace),
                  key=lambda i: (i.workspace, i.created_at, i.token_id))


def revoke(home: str | os.PathLike | None, token_or_id: str) -> bool:
    """Revoke by token id (as `list` shows it) or by the full token; False when there was none."""
    token_id = token_or_id
    if token_or_id.startswith(PREFIX):
        token_id = token_or_id[len(PREFIX):].partition("_")[0]
    with _editing(home) as data:
        return data["tokens"].pop(token_id, None) is not None


def revoke_workspace(home: str | os.PathLike | None, workspace: str) -> int:
    """Revoke every token scoped to a workspace (when it is deleted, so a namesake does not inherit them)."""
    with _editing(home) as data:
        gone = [tid for tid, e in data["tokens"].items() if e.get("workspace") == workspace]
        for tid in gone:
            del data["tokens"][tid]
    return len(gone)
