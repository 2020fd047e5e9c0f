"""Where workspace data lives: a local folder (default) or object storage (`s3://bucket/prefix`).

Every layer of a workspace (landing, lake, quarantine, curated tables) is addressed through a path
object: `pathlib.Path` locally, `upath.UPath` (fsspec: s3fs, gcsfs, …) for a URL. Both answer `/`,
`exists`, `glob`, `read_bytes`, `write_bytes`, so the stages stay the same code in every profile.
The few operations that differ — atomic replace, fsync, Parquet I/O — live here.

Credentials and endpoints are never in config: s3fs, polars and Deeplake all read the standard
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_ENDPOINT_URL` / `AWS_REGION` variables
(`AWS_ALLOW_HTTP=true` for an http endpoint such as MinIO or moto on 127.0.0.1).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.settings import current_settings

AnyPath = Any  # pathlib.Path | upath.UPath: both expose the pathlib API this module relies on
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "memory://")


def is_url(value: str | os.PathLike | None) -> bool:
    return bool(value) and str(value).startswith(REMOTE_SCHEMES)


def is_remote(path: AnyPath) -> bool:
    """True for object-storage paths (no fsync, no rename, no append)."""
    return not isinstance(path, Path)


def as_path(value: str | os.PathLike) -> AnyPath:
    """A local `Path` (resolved) for a folder, a `UPath` for a URL (`file://` counts as local)."""
    text = str(value)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if is_url(text):
        from upath import UPath

        return UPath(text)
    return Path(text).resolve()


def profile_setting(name: str) -> str:
    """A resolved setting (`data_root`, `corpus_root`, `mlflow_tracking_uri`, …): flag-free, so
    environment variable > active profile > empty. Kept for callers that predate `pipeline.settings`."""
    return str(getattr(current_settings(), name) or "")


def data_root(home: Path, explicit: str | os.PathLike | None = None) -> AnyPath:
    """Root of all workspaces: explicit argument, else `$TRACEMILL_DATA_ROOT`, else the active profile's
    `data_root`, else `<home>/workspaces` (the precedence of `pipeline.settings`)."""
    value = explicit or current_settings(home=home).data_root
    return as_path(value) if value else home / "workspaces"


def source(path: AnyPath) -> str | Path:
    """What polars and orjson-based readers take: the local path, or the URL string."""
    return str(path) if is_remote(path) else path


def _tmp_name(path: AnyPath) -> AnyPath:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # concurrent runs never collide


def _sweep_stale_temps(path: Path) -> None:
    """Remove temp files of `path` left by writers that were killed (their process is gone): a write
    that fails cleans up after itself, a SIGKILLed one cannot."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:  # alive, someone else's
                pass


def write_bytes_atomic(path: AnyPath, data: bytes) -> None:
    """Readers never see half a file: temp + rename locally; object stores publish a PUT atomically."""
    if is_remote(path):
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _publish(path, lambda tmp: tmp.write_bytes(data))


def _publish(path: Path, write: Callable[[Path], Any]) -> None:
    """Write a temp file next to `path` and rename it over `path`; a failed write (a full disk)
    removes the temp file, so no `.tmp` is left behind for every failed attempt."""
    _sweep_stale_temps(path)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet(df: pl.DataFrame, path: AnyPath, metadata: dict[str, str] | None = None) -> None:
    """Write a whole Parquet file atomically (see `write_bytes_atomic`). `metadata` goes into the
    file's key-value footer, so it is published in the same atomic step as the rows (an ingest
    cursor stored there can never disagree with the data)."""
    if is_remote(path):
        df.write_parquet(str(path), metadata=metadata)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _publish(path, lambda tmp: df.write_parquet(tmp, metadata=metadata))


def parquet_metadata(path: AnyPath) -> dict[str, str]:
    """The key-value footer of a Parquet file (reads the footer only)."""
    return pl.read_parquet_metadata(source(path))


def read_parquet(path: AnyPath, columns: list[str] | None = None) -> pl.DataFrame:
    return pl.read_parquet(source(path), columns=columns)


def scan_parquet(path: AnyPath) -> pl.LazyFrame:
    return pl.scan_parquet(source(path))


def remove(path: AnyPath, missing_ok: bool = True) -> None:
    if path.exists() or not missing_ok:
        path.unlink()


def remove_tree(path: AnyPath) -> None:
    """Delete a folder (or every object under a prefix)."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
        return
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def describe(path: AnyPath) -> str:
    """For messages and Dagster metadata: the local path or the URL."""
    return str(path)
