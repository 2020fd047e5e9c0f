"""The loader's building blocks: Deeplake column block reads, run-length coded loss masks, and the reusable
memory ("arenas") that a buffer of padded batches is laid out in.

Kept apart from `CorpusLoader` (which plans epochs and shards) so the packing collator
(`pipeline.train.packing`) can use a buffer without the loader's planning.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

IGNORE = -100  # label of tokens without loss (transformers' ignore_index)
ARENA = (("input_ids", np.int64), ("attention_mask", np.int64), ("labels", np.int64), ("loss_mask", np.uint8))


def read_rows(dataset: Any, column: str, idx: np.ndarray) -> Any:
    """Rows `idx` (ascending) of a column: one span read, then picked, unless the span is over 16x the
    rows wanted (an index-list read costs ~30 us a row in Deeplake 4.7, a span ~1.5 us)."""
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    if hi - lo > 16 * len(idx):
        return dataset[column][idx.tolist()]
    values = dataset[column][lo:hi]
    if hi - lo == len(idx):
        return values
    return values[idx - lo] if isinstance(values, np.ndarray) else list(take(values, idx - lo))


def take(items: Sequence[Any], order: np.ndarray, cut: int | None = None) -> Sequence[Any]:
    """`items` in `order` (a C-level gather), each cut to `cut` when given."""
    idx = order.tolist()
    picked = (items[idx[0]],) if len(idx) == 1 else itemgetter(*idx)(items)
    return picked if cut is None else [a[:cut] for a in picked]


@dataclass
class Buffer:
    """A buffer's rows in yield order: flat (row after row) and, when padded, one arena per tensor that
    every batch of the buffer is a view of."""

    rows: np.ndarray  # row number in the version
    lens: np.ndarray  # truncated lengths
    starts: np.ndarray  # offset of each row in `ids` / `labels`
    ids: np.ndarray  # int32 token ids, truncated rows back to back
    labels: np.ndarray  # int32, IGNORE where loss_mask == 0
    extra: dict[str, Any]
    spans: list[tuple[int, int, int, int]]  # per batch: first row, rows, arena offset, width
    arena: dict[str, np.ndarray] | None = None


class ArenaPool:
    """Buffer memory is reused once nothing views it any more (its refcount is back to the pool's own):
    fresh ~50 MB buffers cost page faults worth a quarter of the loader's time. A batch the consumer
    keeps just keeps its buffer's memory out of the pool."""

    def __init__(self, size: int) -> None:
        self.size, self.raw, self.lock = size, [], threading.Lock()

    def take(self, layout: list[tuple[str, Any, int]]) -> dict[str, np.ndarray]:
        """Arrays (name, dtype, length) carved from one block, widest dtype first so all are aligned."""
        layout = sorted(layout, key=lambda x: -np.dtype(x[1]).itemsize)
        sizes = [n * np.dtype(t).itemsize for _, t, n in layout]
        with self.lock:  # `self.raw[i]` is referenced by the list and getrefcount's argument only
            free = [i for i in range(len(self.raw)) if sys.getrefcount(self.raw[i]) == 2]
            fits = [i for i in free if self.raw[i].nbytes >= sum(sizes)]
            raw = self.raw[fits[0]] if fits else np.empty(sum(sizes) * 5 // 4, np.uint8)
            if not fits and free:
                self.raw[free[0]] = raw  # a free block that is too small gives way
            elif not fits and len(self.raw) < self.size:
                self.raw.append(raw)
        ends = np.cumsum(sizes).tolist()
        return {name: raw[end - k:end].view(t)
                for (name, t, _), k, end in zip(layout, sizes, ends, strict=True)}


def run_lengths(flat: np.ndarray, starts: np.ndarray, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length code of each row's first `cut` values: run lengths, run values, runs per row."""
    bounds = np.union1d(np.flatnonzero(flat[1:] != flat[:-1]) + 1, starts)  # every row starts a run
    row = np.searchsorted(starts, bounds, side="right") - 1
    stop = starts[row] + cut[row]
    ok = bounds < stop
    lengths = np.minimum(np.append(bounds[1:], len(flat)), stop) - bounds
    return lengths[ok].astype(np.int32), flat[bounds[ok]], np.bincount(row[ok], minlength=len(starts))
