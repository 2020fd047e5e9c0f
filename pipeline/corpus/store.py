"""Versioned, tensor-native training corpora in Deeplake.

A corpus is one Deeplake dataset; every snapshot is a commit plus a tag `vN`, and training or eval
always opens a *tag*, never the head, so a run can be reproduced exactly after later snapshots. The
tag message carries the version's lineage as JSON: tag and lineage appear in one atomic step, and a
snapshot killed midway leaves at most an untagged commit that no reader sees and that the next
snapshot reverts (or, when a revert is impossible, overwrites: see `pipeline.corpus.recovery`). One writer at a time
per corpus, enforced by a lease beside it (`pipeline.corpus.lease`). Token ids and loss masks are int
arrays next to the text, read in column blocks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deeplake
import numpy as np
import polars as pl

from pipeline import progress
from pipeline.corpus import columns as io
from pipeline.corpus.lease import LEASE_TTL, SnapshotLease
from pipeline.corpus.recovery import reset_head
from pipeline.jsonio import dumps_json
from pipeline.settings import current_settings

HASH_COL = "row_hash"  # per-row content hash, stored so the next snapshot can compute a delta
VERSION_RE = re.compile(r"^v([0-9]+)\Z")  # \Z, not $: `$` also matches before a trailing newline
NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*\Z")
SCHEMES = ("file://", "s3://", "gcs://", "gs://", "al://", "az://", "azure://", "mem://")
MARKER = "tracemill.corpus"
APPEND_BATCH = 50_000


class CorpusNotFound(LookupError):
    pass


class CorpusVersionNotFound(LookupError):
    pass


class EmptySnapshot(ValueError):
    """A snapshot of 0 rows was not asked for: an empty version is almost always outcomes not there yet."""


def default_corpus_root() -> str:
    """`$TRACEMILL_CORPUS_ROOT`, else the active profile's `corpus_root`, else `<tracemill home>/corpora`
    as a file:// URL (the precedence of `pipeline.settings`)."""
    return current_settings().corpus_root_url


def _as_url(path: str) -> str:
    return path.rstrip("/") if path.startswith(SCHEMES) else "file://" + str(Path(path).resolve())


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`"org/sft@v3"` -> `("org/sft", "v3")`; without `@` the version is None (= latest)."""
    base, sep, version = ref.rpartition("@")
    if not sep or "/" in version:
        return ref, None
    if not VERSION_RE.match(version):
        raise ValueError(f"bad corpus version {version!r} in {ref!r}: expected '@v<N>', e.g. 'org/sft@v3'")
    return base, version


def resolve_corpus_url(ref: str, root: str | None = None) -> str:
    """Map `deeplake://org/name` or `org/name` to `<root>/org/name`; URLs and paths pass through.

    A relative path shaped like `org/name` is read as a corpus name: write `./org/name` for a folder.
    Any `@vN` suffix is dropped here; use `parse_ref` to get it."""
    ref = parse_ref(ref)[0]
    if ref.startswith("deeplake://"):
        ref = ref.removeprefix("deeplake://")
        if not NAME_RE.match(ref):
            raise ValueError(f"bad corpus name {ref!r}: expected deeplake://<org>/<name>")
    if ref.startswith(SCHEMES) or not NAME_RE.match(ref):
        return _as_url(ref)
    return f"{_as_url(root) if root else default_corpus_root()}/{ref}"


@dataclass(frozen=True)
class SnapshotInfo:
    url: str
    version: str
    created: bool
    row_count: int
    content_hash: str
    parent: str | None
    appended: int
    mode: str  # 'append' | 'replace' | 'unchanged'
    lineage: dict[str, Any] = field(default_factory=dict)
    removed: int = 0

    @property
    def ref(self) -> str:
        return f"{self.url}@{self.version}"


def _versions(ds: Any) -> dict[int, Any]:
    """The `vN` tags of a dataset by N (other tags are left alone)."""
    return {int(m[1]): ds.tags[n] for n in ds.tags.names() if (m := VERSION_RE.match(n))}


def _lineage(ds: Any, n: int, tag: Any) -> dict[str, Any]:
    key = f"{MARKER}.v{n}"
    text = tag.message or (ds.metadata[key] if key in ds.metadata.keys() else "")
    return json.loads(text) if text else {"version": f"v{n}"}


def _open_for_write(url: str) -> Any:
    """Open (or create) the dataset; a dataset with no tag at all holds only a crashed first
    snapshot, so it is recreated -- unless it does not look like ours, which we never delete."""
    if deeplake.exists(url):
        ds = deeplake.open(url)
        if _versions(ds) or len(ds.tags):
            return ds
        if len(ds) and MARKER not in ds.metadata.keys():
            raise ValueError(f"{url} holds data that is not a tracemill corpus; refusing to touch it")
        del ds
        deeplake.delete(url)
    return deeplake.create(url)


def snapshot(rows: pl.DataFrame, url: str, *, lineage: dict[str, Any] | None = None,
             message: str = "", root: str | None = None, allow_empty: bool = False,
             lease_ttl: float = LEASE_TTL) -> SnapshotInfo:
    """Make the corpus equal to `rows` as a new tagged version, or return the latest one unchanged.

    Idempotent on content (an order-independent hash over every column but the token ones, plus the
    derivation key of `lineage`: tokenizer, max_length, ...), appends only the delta when the previous
    version's rows all survive unchanged, and otherwise deletes stale rows in place: older tags keep
    their rows because Deeplake versions are copy-on-write. Rows with the same text but other tokens
    must come with another derivation key, which rebuilds every row rather than diffing. 0 rows make
    a version only with `allow_empty`. Holds the corpus's lease throughout: a concurrent snapshot of
    the same corpus raises `LeaseHeld` (one line) instead of interleaving commits."""
    if parse_ref(url)[1]:
        raise ValueError(f"snapshot writes the next version itself: pass {parse_ref(url)[0]!r} without @vN")
    name, url = parse_ref(url)[0], resolve_corpus_url(url, root)
    if "trajectory_id" not in rows.columns or HASH_COL in rows.columns:
        raise ValueError(f"rows need a 'trajectory_id' column and must not carry {HASH_COL!r}")
    if rows["trajectory_id"].null_count() or rows["trajectory_id"].n_unique() != rows.height:
        raise ValueError("trajectory_id must be non-null and unique within a snapshot")
    if not rows.height and not allow_empty:
        raise EmptySnapshot(f"no rows to snapshot into {name}: no version made (pass allow_empty=True to "
                            "record an empty one)")
    with SnapshotLease(url, name, lease_ttl) as lease:
        return _write(rows, url, lineage or {}, message, lease)


def _write(rows: pl.DataFrame, url: str, lineage: dict[str, Any], message: str, lease: SnapshotLease) -> SnapshotInfo:
    keys = {c: io.type_key(c, rows[c]) for c in rows.columns}
    hashed = io.hashed_columns(rows, keys)  # every column but the token arrays
    keys[HASH_COL] = io.HASH_KEY

    ds = _open_for_write(url)
    versions = _versions(ds)
    last = max(versions, default=0)
    prev = _lineage(ds, last, versions[last]) if last else None
    # A caller that does not say how the tokens were made keeps the previous version's derivation.
    derived = io.derivation(lineage) or (prev or {}).get("derivation") or {}
    digest = io.content_hash(hashed, derived)
    if prev and prev.get("content_hash") == digest:
        return SnapshotInfo(url, f"v{last}", False, prev["row_count"], digest, prev.get("parent"),
                            0, "unchanged", prev)
    clean = not last or reset_head(ds, versions[last])  # False: drop the head's rows and columns

    # A delta needs the same stored schema, row-hash scheme and derivation key (tokenizer, max_length):
    # token columns are not hashed, so a new tokenizer over the same text must rebuild every row.
    rebuild = not clean or not prev or prev.get("schema") != keys or prev.get("row_hash") != io.HASH_SCHEME \
        or (prev.get("derivation") or {}) != derived
    hashes = io.row_hashes(hashed)
    if rebuild:
        stale, fresh = np.arange(len(ds)), np.arange(rows.height)
    else:  # a row hash covers the trajectory_id too: the hash column alone (one block read) decides
        both = io.hash_frame(ds[HASH_COL][:]).with_row_index("old").join(  # kept, stale and new rows
            io.hash_frame(hashes).with_row_index("new"), on=["h0", "h1"], how="full")
        stale = both.filter(pl.col("new").is_null())["old"].sort().to_numpy()
        fresh = both.filter(pl.col("old").is_null())["new"].sort().to_numpy()
    for i in stale[::-1].tolist():  # descending, so earlier offsets stay valid
        ds.delete(i)
    if rebuild:  # only touch changed columns: removing *every* column of a 4.7 dataset is silently
        # undone at commit, deleted rows included; an unknown head keeps only the fixed-type hash column
        was = (prev or {}).get("schema", {}) if clean else {HASH_COL: io.HASH_KEY}
        for name in [c.name for c in ds.schema.columns if was.get(c.name) != keys.get(c.name)]:
            ds.remove_column(name)
        for name in [n for n in keys if n not in {c.name for c in ds.schema.columns}]:
            ds.add_column(name, io.deeplake_type(keys[name]))
    keep = np.zeros(rows.height, dtype=bool)
    keep[fresh] = True
    delta = rows.filter(pl.Series(keep)) if len(fresh) < rows.height else rows  # no gather: token lists
    for start in range(0, delta.height, APPEND_BATCH):
        part = delta.slice(start, APPEND_BATCH)
        ds.append({**{c: io.to_storage(part[c], keys[c]) for c in part.columns},
                   HASH_COL: hashes[fresh[start:start + APPEND_BATCH]]})
        progress.report(start + part.height, delta.height)

    version = f"v{last + 1}"
    record = {"filter": None, "source_partitions": [], "tokenizer": None, **lineage,
              "version": version, "parent": f"v{last}" if last else None, "row_count": rows.height,
              "content_hash": digest, "mode": "replace" if len(stale) or (prev and rebuild) else "append",
              "appended": delta.height, "removed": len(stale), "schema": keys,
              "derivation": derived, "row_hash": io.HASH_SCHEME,
              "created_at": datetime.now(UTC).isoformat(), "message": message}
    text = dumps_json(record, default=str)
    ds.metadata[MARKER] = "1"
    ds.metadata[f"{MARKER}.{version}"] = text  # browsable copy; the tag message is the source of truth
    lease.check()
    ds.commit(message or f"tracemill snapshot {version}")
    lease.check()  # a writer that lost its lease leaves an untagged commit, which the next one resets
    ds.tag(version, text)
    return SnapshotInfo(url, version, True, rows.height, digest, record["parent"], delta.height,
                        record["mode"], record, len(stale))


class Corpus:
    """One tagged version of a corpus (or a TQL view over it), read-only, read in column blocks."""

    def __init__(self, dataset: Any, url: str, version: str, lineage: dict[str, Any], keep: Any = None):
        self.dataset, self.url, self.version, self.lineage = dataset, url, version, lineage
        self._keep = keep  # Deeplake frees views whose parent object is collected ("expired")
        self.schema: dict[str, str] = lineage.get("schema") or {}

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.dataset.schema.columns if c.name != HASH_COL]

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return f"Corpus({self.url}@{self.version}, rows={len(self)})"

    def column(self, name: str, start: int = 0, stop: int | None = None) -> list[Any] | np.ndarray:
        """A block read: ndarray for scalar columns, list of int arrays for token columns."""
        values = self.dataset[name][start:len(self) if stop is None else stop]
        if self.schema.get(name, "").startswith("nullable["):
            return io.decode_nullable(values)
        return values

    def to_polars(self, columns: list[str] | None = None) -> pl.DataFrame:
        cols = columns or self.columns
        return pl.DataFrame([io.from_storage(self.dataset[c][:], self.schema.get(c, ""), c) for c in cols])

    def rows(self, columns: list[str] | None = None) -> list[dict[str, Any]]:
        cols = columns or self.columns
        # Scalar columns become Python values (JSON-ready); token columns stay int arrays.
        data = [v.tolist() if isinstance(v := self.column(c), np.ndarray) else v for c in cols]
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*data, strict=True)]

    def query(self, tql: str) -> Corpus:
        """A slice of this version as a TQL query, e.g. `SELECT * WHERE "split" = 'eval'`."""
        return Corpus(self.dataset.query(tql), self.url, self.version, self.lineage, keep=self)


def _open_version(ref: str, root: str | None) -> tuple[Any, str, int, dict[int, Any]]:
    url, version = resolve_corpus_url(ref, root), parse_ref(ref)[1]
    if not deeplake.exists(url):
        raise CorpusNotFound(f"corpus {ref!r} not found at {url}: snapshot it first")
    ro = deeplake.open_read_only(url)
    versions = _versions(ro)
    if not versions:
        raise CorpusVersionNotFound(f"corpus {ref!r} at {url} has no versions yet")
    n = int(version[1:]) if version else max(versions)
    if n not in versions:
        have = ", ".join(f"v{k}" for k in sorted(versions))
        raise CorpusVersionNotFound(f"corpus {parse_ref(ref)[0]!r} has no version {version}; available: {have}")
    return ro, url, n, versions


def open_corpus(ref: str, root: str | None = None) -> Corpus:
    """Open `org/name@vN` (or the latest tag) exactly as it was snapshotted, whatever came after."""
    ro, url, n, versions = _open_version(ref, root)
    return Corpus(versions[n].open(), url, f"v{n}", _lineage(ro, n, versions[n]), keep=ro)


def list_versions(ref: str, root: str | None = None) -> list[dict[str, Any]]:
    """Every tagged version, oldest first, with its lineage (row count, hash, filter, parent...)."""
    ro, _, _, versions = _open_version(parse_ref(ref)[0], root)
    return [{**_lineage(ro, n, t), "version": f"v{n}", "commit": t.version} for n, t in sorted(versions.items())]


def _hash_values(column: Any) -> list[Any]:
    """Stored row hashes as comparable values: (h0, h1) pairs, or strings from older versions."""
    return [tuple(r) for r in column.tolist()] if isinstance(column, np.ndarray) else list(column)


def diff_versions(ref_a: str, ref_b: str, root: str | None = None, sample: int = 5) -> dict[str, Any]:
    """Trajectory-level diff between two versions; `ref_b` may be a bare `vN` of the same corpus."""
    if VERSION_RE.match(ref_b):
        ref_b = f"{parse_ref(ref_a)[0]}@{ref_b}"
    name_a, name_b = parse_ref(ref_a)[0], parse_ref(ref_b)[0]
    if resolve_corpus_url(name_a, root) != resolve_corpus_url(name_b, root):
        # rows of two corpora share no history (and often no row shape): a diff would say "all removed, all added"
        raise ValueError(f"corpus diff compares two versions of one corpus; {name_a} and {name_b} are different "
                         f"corpora: diff e.g. {name_a}@v1 {name_a}@v2, or `tracemill corpus show` each")
    a, b = open_corpus(ref_a, root), open_corpus(ref_b, root)
    ha = dict(zip(a.column("trajectory_id"), _hash_values(a.column(HASH_COL)), strict=True))
    hb = dict(zip(b.column("trajectory_id"), _hash_values(b.column(HASH_COL)), strict=True))
    added, removed = sorted(hb.keys() - ha.keys()), sorted(ha.keys() - hb.keys())
    changed = sorted(t for t in ha.keys() & hb.keys() if ha[t] != hb[t])
    return {"from": a.version, "to": b.version, "added": len(added), "removed": len(removed),
            "changed": len(changed), "unchanged": len(ha.keys() & hb.keys()) - len(changed),
            "added_sample": added[:sample], "removed_sample": removed[:sample],
            "changed_sample": changed[:sample]}
