"""One writer per corpus: a lease with expiry, next to the corpus, on local disk and on object storage.

Deeplake datasets are single-writer: two snapshots of one corpus at once used to revert each other's
commits and wedge the corpus for good. A snapshot therefore holds a lease, a small JSON object
`<parent>/.<name>.lease` (holder id, expiry) that only one writer can create or take over:

* local disk: every read-compare-write of the lease file happens under `flock` on a guard file, which
  the kernel releases when a process dies, so the guard itself can never wedge;
* S3 (and S3-compatible stores): conditional writes, `If-None-Match: *` to create and `If-Match:
  <ETag>` to renew, take over or delete, so the store arbitrates;
* `mem://`: an in-process table (such datasets live in one process anyway).

A holder renews its lease every third of its time-to-live from a background thread; a killed holder
stops renewing, so its lease expires and the next writer takes it over: nothing blocks for longer
than one TTL. A holder that stalls past its expiry loses the lease, and `check()` tells it before it
commits or tags. Other object stores (gs://, az://, al://) have no portable conditional write here:
their snapshots run without a lease, with a warning, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import orjson

from pipeline.logs import event, get_logger

LEASE_TTL = 60.0  # seconds; a killed holder blocks the corpus at most this long
log = get_logger("lease")


class LeaseHeld(RuntimeError):
    """Another writer holds the lease; the message is one line naming it and when it expires."""


class LeaseLost(RuntimeError):
    """This writer stalled past its lease's expiry and another one took the corpus over."""


class _Store(Protocol):
    """Compare-and-swap on one small object; a token identifies the version a caller read."""

    def read(self) -> tuple[bytes, Any] | None: ...
    def create(self, data: bytes) -> Any | None: ...
    def replace(self, data: bytes, token: Any) -> Any | None: ...
    def delete(self, token: Any) -> None: ...


class _LocalStore:
    """A file; the content itself is the token (it holds a unique holder id and expiry)."""

    def __init__(self, path: Path) -> None:
        self.path, self.guard = path, path.with_name(path.name + ".guard")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.guard, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # microseconds; released by the kernel if we die here
            yield

    def read(self) -> tuple[bytes, Any] | None:
        with self._locked():
            return (data, data) if (data := self._bytes()) is not None else None

    def _bytes(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, data: bytes) -> bytes:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
        return data

    def create(self, data: bytes) -> Any | None:
        with self._locked():
            return None if self._bytes() is not None else self._write(data)

    def replace(self, data: bytes, token: Any) -> Any | None:
        with self._locked():
            return self._write(data) if self._bytes() == token else None

    def delete(self, token: Any) -> None:
        with self._locked():
            if self._bytes() == token:
                self.path.unlink()


def _precondition_failed(exc: BaseException) -> bool:
    """True when S3 refused a conditional request (412, or 409 for a concurrent conditional write)."""
    cause = exc.__cause__ or exc
    code = (getattr(cause, "response", None) or {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") \
        or "pre-condition" in str(exc).lower() or isinstance(exc, FileExistsError)


class _S3Store:
    """An object; the token is its ETag, and every write is conditional on it."""

    def __init__(self, url: str) -> None:
        import fsspec

        # no cached instance: it would keep the endpoint and credentials of the first one made
        self.fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
        self.bucket, _, self.key = path.partition("/")

    def _call(self, method: str, **kw: Any) -> dict[str, Any] | None:
        from fsspec.asyn import sync

        async def call() -> dict[str, Any]:
            out = await self.fs._call_s3(method, Bucket=self.bucket, Key=self.key, **kw)
            if method == "get_object":
                out["data"] = await out["Body"].read()
            return out

        try:
            return sync(self.fs.loop, call)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if _precondition_failed(exc):
                return None
            raise

    def read(self) -> tuple[bytes, Any] | None:
        return (out["data"], out["ETag"]) if (out := self._call("get_object")) else None

    def create(self, data: bytes) -> Any | None:
        return out["ETag"] if (out := self._call("put_object", Body=data, IfNoneMatch="*")) else None

    def replace(self, data: bytes, token: Any) -> Any | None:
        return out["ETag"] if (out := self._call("put_object", Body=data, IfMatch=token)) else None

    def delete(self, token: Any) -> None:
        self._call("delete_object", IfMatch=token)


class _MemoryStore:
    """For `mem://` corpora, which exist in one process only."""

    table: ClassVar[dict[str, bytes]] = {}
    mutex: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str) -> None:
        self.url = url

    def read(self) -> tuple[bytes, Any] | None:
        with self.mutex:
            return (data, data) if (data := self.table.get(self.url)) is not None else None

    def create(self, data: bytes) -> Any | None:
        with self.mutex:
            return None if self.url in self.table else self.table.setdefault(self.url, data)

    def replace(self, data: bytes, token: Any) -> Any | None:
        with self.mutex:
            if self.table.get(self.url) != token:
                return None
            self.table[self.url] = data
            return data

    def delete(self, token: Any) -> None:
        with self.mutex:
            if self.table.get(self.url) == token:
                del self.table[self.url]


def lease_url(corpus_url: str) -> str:
    """`<root>/org/sft` -> `<root>/org/.sft.lease`: beside the dataset (a crashed first snapshot's
    dataset is deleted and recreated, a lease inside it would go too), never a valid corpus name."""
    parent, _, name = corpus_url.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.lease"


def _store(corpus_url: str) -> _Store | None:
    url = lease_url(corpus_url)
    if url.startswith("file://"):
        return _LocalStore(Path(url.removeprefix("file://")))
    if url.startswith("s3://"):
        return _S3Store(url)
    if url.startswith("mem://"):
        return _MemoryStore(url)
    return None


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_lease(corpus_url: str) -> dict[str, Any] | None:
    """The current lease record of a corpus (holder, acquired_at, expires_at), or None."""
    store = _store(corpus_url)
    found = store.read() if store else None
    return _parse(found[0]) if found else None


def _parse(data: bytes) -> dict[str, Any]:
    try:
        rec = orjson.loads(data)
        return rec if isinstance(rec, dict) and isinstance(rec.get("expires_at"), int | float) else {}
    except orjson.JSONDecodeError:
        return {}  # a torn or foreign lease counts as expired


class SnapshotLease:
    """Held for one snapshot of one corpus: `with SnapshotLease(url, name): ...`."""

    def __init__(self, corpus_url: str, name: str, ttl: float = LEASE_TTL) -> None:
        self.url, self.name, self.ttl = corpus_url, name, ttl
        self.store = _store(corpus_url)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token: Any = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        now = time.time()
        return orjson.dumps({"holder": self.holder, "corpus": self.url, "acquired_at": _clock(now),
                             "expires_at": now + self.ttl})

    def acquire(self) -> None:
        """Create the lease, or take over an expired one; raise `LeaseHeld` when a live one exists."""
        if self.store is None:
            event(log, "snapshot without lease", corpus=self.name,
                  reason=f"no conditional writes on {self.url.split('://')[0]}://")
            return
        while self.token is None:
            if (token := self.store.create(self._record())) is not None:
                self.token = token
                break
            if (found := self.store.read()) is None:
                continue  # released between our two calls
            rec = _parse(found[0])
            if rec and rec["expires_at"] > time.time():
                raise LeaseHeld(f"corpus {self.name} is being snapshotted by {rec.get('holder')} (lease "
                                f"until {_clock(rec['expires_at'])}): run again when it has finished")
            if (token := self.store.replace(self._record(), found[1])) is not None:
                self.token = token
                event(log, "lease taken over", corpus=self.name, expired_holder=rec.get("holder"))
        self._thread = threading.Thread(target=self._renew, name=f"lease:{self.name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        expires = time.time() + self.ttl
        while not self._stop.wait(self.ttl / 3):
            try:
                token = self.store.replace(self._record(), self.token)
            except OSError as exc:  # a network blip: keep trying until the lease would have expired
                if time.time() < expires:
                    continue
                token, why = None, f"could not renew: {exc}"
            else:
                why = "another writer took it over after it expired"
            if token is None:
                self.lost = why
                return
            self.token, expires = token, time.time() + self.ttl

    def check(self) -> None:
        """Raise `LeaseLost` when this holder no longer owns the corpus (call before commit and tag)."""
        if self.lost:
            raise LeaseLost(f"snapshot of {self.name} lost its lease ({self.lost}); nothing was tagged: run it again")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.store is not None and self.token is not None and not self.lost:
            self.store.delete(self.token)
        self.token = None

    def __enter__(self) -> SnapshotLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
