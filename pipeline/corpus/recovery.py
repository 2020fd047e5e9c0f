"""How a snapshot finds the write head of a corpus, whatever a crash or an old race left there.

The crash states, all met in practice: (1) the head *is* the latest tag (clean); (2) an untagged
commit above it (killed between commit and tag): revert it; (3) a revert marker above it (killed
right after that revert): already clean, Deeplake says 'nothing to revert'; (4) the latest tag's own
commit reverted by a second writer (two snapshots raced under code without the lease): no revert can
reach it, so the head's rows are unknown and the snapshot rebuilds every row against them. Each
state has exactly one outcome, so recovery is deterministic.
"""

from __future__ import annotations

from typing import Any


def reset_head(ds: Any, tag: Any) -> bool:
    """Bring the write head back to the latest tag after a crash (an untagged commit on top of it).
    Returns False when the head cannot be reverted to it: two writers that raced under older code
    left that tag's commit itself reverted ('not a live commit'). The head then holds rows no tag
    vouches for, and the caller rebuilds every row against what the head holds -- deterministic
    whatever the crash left, because a snapshot makes the corpus *equal* to its rows."""
    if ds.version == tag.version:
        return True
    try:
        ds.revert_to(tag.version)
        return True
    except RuntimeError as exc:  # already reverted by a writer killed right after its revert: clean
        if "already the live head" in str(exc):
            return True
        if "not a live commit" not in str(exc):
            raise
        return False
