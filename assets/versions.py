"""`code_version`s for the assets: a short hash of the source of the pipeline rooms an asset runs.

Why: without a code_version Dagster cannot tell a person that an asset is stale because its code
changed, and every asset page shows an empty "Code version". Hashing the rooms' files (not a hand-kept
number) means the version moves exactly when the code that computes the asset does.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import pipeline

PIPELINE = Path(pipeline.__file__).resolve().parent  # where the library is installed, checkout or wheel


@cache
def room_version(*rooms: str) -> str:
    """12 hex digits over every .py file under the named rooms of `pipeline/` (e.g. "lake", "corpus"),
    plus the root modules every room shares (schema, settings, config)."""
    digest = hashlib.sha1()
    files = [f for r in rooms for f in sorted((PIPELINE / r).rglob("*.py"))]
    for f in [*files, *(PIPELINE / n for n in ("schema.py", "settings.py", "config.py"))]:
        digest.update(f.relative_to(PIPELINE).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]
