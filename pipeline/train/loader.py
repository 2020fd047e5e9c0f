"""Tensor-native streaming of a pinned corpus version into padded torch batches (packed: `pipeline.train.packing`).

Why not `ds.pytorch()`: Deeplake 4.7 reads it row by row, ~100x slower than column block reads. This
loader reads contiguous blocks (`ds[col][i:j]`), shuffles by block and then within a buffer of a few
blocks, and pads a whole buffer with a handful of numpy calls while a thread prepares the next one.

An epoch is a pure function of (seed, epoch, rank, world_size) and the row lengths:
1. rows: the version's rows (or a TQL query's, by row number in the version) minus rows with no
   trainable token after truncation, i.e. the rows `sft.prepare_rows` keeps. That costs one pass
   over `loss_mask` (1 byte a token) at construction, which also gives the lengths (`len()` is exact,
   batches are planned before any token is read) and run-length codes the masks (epochs then read
   only `input_ids`).
2. blocks of `block_size` rows in storage order, permuted with `default_rng([seed, epoch])`;
3. the permuted stream is cut into `world_size` contiguous segments: every row lands on exactly one rank
   (segments differ by at most one row). `drop_last=True` gives every rank `n // world_size` rows and
   only full batches, which keeps DDP ranks in lockstep; `pad_shards=True` instead repeats the stream's
   first row on the short ranks (DistributedSampler-style), the only rows then seen twice.
4. each rank walks its segment in buffers of ~`buffer_blocks * block_size` rows, a multiple of
   `batch_size` so only the last batch can be short: rows are shuffled in the buffer, sorted by length
   (`group_by_length`), cut into batches, and the batch order is shuffled.
Truncation keeps the start of a sequence, as `sft.prepare_rows` does.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from pipeline.corpus.store import open_corpus
from pipeline.train.blocks import ARENA, IGNORE, ArenaPool, Buffer, read_rows, run_lengths, take

ROW_COL = "tmrow"  # row-number column added under a query; TQL identifiers may not start with "_"
TOKEN_COLS = ("input_ids", "loss_mask")
Plan = list[tuple[np.ndarray, list[np.ndarray]]]  # per buffer: stream positions, batches (buffer-local)


class CorpusLoader:
    """Iterable of padded batches: `input_ids`, `attention_mask`, `labels` (IGNORE on masked and pad
    tokens), `loss_mask` (uint8), `row_index` (row number in the version), plus extra `columns`."""

    def __init__(self, ref: str, *, root: str | None = None, query: str | None = None, batch_size: int = 16,
                 max_length: int = 512, block_size: int = 1024, buffer_blocks: int = 4, shuffle: bool = True,
                 seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 group_by_length: bool = True, drop_last: bool = False, pad_shards: bool = False,
                 columns: Sequence[str] = TOKEN_COLS, pad_id: int = 0, skip_untrainable: bool = True,
                 cache_masks: bool | None = None, prefetch: int = 1) -> None:
        self.config: dict[str, Any] = {k: v for k, v in locals().items() if k != "self"}  # to rebuild it
        if not 0 <= rank < world_size or seed < 0 or min(batch_size, max_length, block_size, buffer_blocks) < 1:
            raise ValueError("need 0 <= rank < world_size, positive sizes and seed >= 0")
        if not set(TOKEN_COLS) <= set(columns):
            raise ValueError(f"columns must include {TOKEN_COLS}")
        self.batch_size, self.max_length, self.block_size, self.buffer_blocks = (
            batch_size, max_length, block_size, buffer_blocks)
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.group_by_length, self.drop_last, self.pad_shards = group_by_length, drop_last, pad_shards
        self.pad_id, self.prefetch, self.extra = pad_id, prefetch, [c for c in columns if c not in TOKEN_COLS]
        self.corpus = open_corpus(ref, root)  # held: Deeplake frees objects whose owner is collected
        self._ds = self.corpus.dataset
        rows = self._select(query)
        self._rows, self._full, self._lens, self._mask_runs = self._scan(rows, skip_untrainable, cache_masks)
        self._arenas = ArenaPool(prefetch + 3)
        self.stats = {"batches": 0, "rows": 0, "tokens": 0, "slots": 0}

    def _select(self, query: str | None) -> np.ndarray:
        """Row numbers in the version: all, or a query's (which must keep `*`), in storage order."""
        if not query:
            return np.arange(len(self._ds), dtype=np.int64)
        view = self._ds.query(f"SELECT *, ROW_NUMBER() AS {ROW_COL}").query(query)
        if ROW_COL not in {c.name for c in view.schema.columns}:
            raise ValueError(f"query must keep the rows' columns (SELECT * ...): {query!r}")
        return np.unique(np.asarray(view[ROW_COL][:], dtype=np.int64))

    def _scan(self, rows: np.ndarray, skip: bool, cache: bool | None) -> tuple[np.ndarray, ...]:
        """Full and truncated lengths; drops rows with no loss on tokens 1..max_length-1 (token 0 is never
        predicted), like `sft.prepare_rows`: they give NaN or silently zero losses. Also keeps the
        truncated masks run-length coded: a loss mask is a few assistant spans, so epochs need not read
        `loss_mask` again (that read and its per-row arrays were a third of the time). Masks more
        fragmented than a run per 8 tokens are read per buffer instead (`cache_masks=None`, auto)."""
        full, keep = np.zeros(len(rows), np.int64), np.ones(len(rows), bool)
        runs, n_runs, n_tokens = [], 0, 0
        for i in range(0, len(rows), self.block_size):
            masks = read_rows(self._ds, "loss_mask", rows[i:i + self.block_size])
            lens = np.fromiter(map(len, masks), np.int64, len(masks))
            full[i:i + len(lens)] = lens
            flat, starts = np.concatenate(masks) != 0, np.cumsum(lens) - lens
            cut = np.minimum(lens, self.max_length)
            if skip:
                hits = np.concatenate([[0], np.cumsum(flat)])
                keep[i:i + len(lens)] = (cut >= 2) & (hits[starts + cut] > hits[starts + np.minimum(cut, 1)])
            if runs is not None and cache is not False:
                runs.append(run_lengths(flat, starts, cut))
                n_runs, n_tokens = n_runs + len(runs[-1][0]), n_tokens + int(cut.sum())
                runs = None if cache is None and 8 * n_runs > n_tokens else runs
        mask_runs = None
        if runs:  # per kept row: its runs' lengths and no-loss flags, first run, number of runs
            counts = np.concatenate([r[2] for r in runs])
            run_lens, run_vals = (np.concatenate([r[j] for r in runs])[np.repeat(keep, counts)] for j in (0, 1))
            mask_runs = (run_lens, ~run_vals, np.cumsum(counts[keep]) - counts[keep], counts[keep])
        return rows[keep], full[keep], np.minimum(full[keep], self.max_length), mask_runs

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for another pass; call with the same value on every rank."""
        self.epoch = epoch

    @property
    def num_rows(self) -> int:
        """Trainable rows selected, over all ranks."""
        return len(self._rows)

    def _shard(self) -> tuple[int, int, bool]:
        per, extra = divmod(len(self._rows), self.world_size)
        if self.drop_last:
            return self.rank * per, (self.rank + 1) * per, False
        start = self.rank * per + min(self.rank, extra)
        return start, start + per + (self.rank < extra), self.pad_shards and 0 < extra <= self.rank

    def __len__(self) -> int:
        start, stop, pad = self._shard()
        rows = stop - start + pad
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def plan(self, epoch: int | None = None) -> Plan:
        """This rank's buffers for an epoch: (stream positions, batches as buffer-local index arrays)."""
        epoch = self.epoch if epoch is None else epoch
        n, bs, b = len(self._rows), self.block_size, self.batch_size
        order = np.arange(n)
        if self.shuffle:
            blocks = np.random.default_rng([self.seed, epoch]).permutation(-(-n // bs))
            order = (blocks[:, None] * bs + np.arange(bs)).ravel()
            order = order[order < n]
        start, stop, pad = self._shard()
        seg = np.concatenate([order[start:stop], order[:int(pad)]])
        rng = np.random.default_rng([self.seed, epoch, self.rank, 1])  # in-buffer order: per rank
        step, plan = max(b, self.buffer_blocks * bs // b * b), []
        for i in range(0, len(seg), step):
            pos = seg[i:i + step]
            local = rng.permutation(len(pos)) if self.shuffle else np.arange(len(pos))
            main, rest = local[:len(pos) // b * b], local[len(pos) // b * b:]
            if self.group_by_length:
                main = main[np.argsort(self._lens[pos[main]], kind="stable")]
            batches = list(main.reshape(-1, b))
            batches = [batches[j] for j in rng.permutation(len(batches))] if self.shuffle else batches
            batches += [rest] if len(rest) and not self.drop_last else []
            plan += [(pos, batches)] if batches else []
        return plan

    def plan_padding(self, epoch: int | None = None) -> float:
        """Share of pad slots an epoch will have, from lengths alone (no token is read)."""
        lens = [self._lens[pos[batch]] for pos, batches in self.plan(epoch) for batch in batches]
        slots = sum(len(x) * int(x.max()) for x in lens)
        return 1 - sum(int(x.sum()) for x in lens) / slots if slots else 0.0

    @property
    def padding_fraction(self) -> float:
        """Share of pad slots in the batches yielded so far by the current (or last) pass."""
        return 1 - self.stats["tokens"] / self.stats["slots"] if self.stats["slots"] else 0.0

    def load(self, pos: np.ndarray, batches: list[np.ndarray], pad: bool = True) -> Buffer:
        """Read the rows at stream positions `pos` (one span read per run of consecutive positions), lay
        them out in batch order and, with `pad`, fill the arena that every batch is a view of."""
        ids, masks, extra = [], [], {c: [] for c in self.extra}
        for run in np.split(pos, np.flatnonzero(np.diff(pos) != 1) + 1):
            # list(): a span of equal-length rows comes back from Deeplake as one 2-D array
            ids += list(read_rows(self._ds, "input_ids", self._rows[run]))
            masks += list(read_rows(self._ds, "loss_mask", self._rows[run])) if self._mask_runs is None else []
            for c in self.extra:
                extra[c].append(read_rows(self._ds, c, self._rows[run]))
        if not np.array_equal(np.fromiter(map(len, ids), np.int64, len(ids)), self._full[pos]):
            raise ValueError("input_ids and loss_mask differ in length in some row")
        order = np.concatenate(batches)
        lens = self._lens[pos][order]
        cut = self.max_length if self._full[pos].max() > self.max_length else None  # slice only if needed
        sizes = np.fromiter(map(len, batches), np.int64, len(batches))
        firsts = np.cumsum(sizes) - sizes
        widths = np.maximum.reduceat(lens, firsts)
        offsets = np.cumsum(sizes * widths) - sizes * widths
        spans = list(zip(firsts.tolist(), sizes.tolist(), offsets.tolist(), widths.tolist(), strict=True))
        n, slots = int(lens.sum()), int(offsets[-1] + sizes[-1] * widths[-1]) if pad else 0
        mem = self._arenas.take([("ids", np.int32, n), ("flat_labels", np.int32, n), ("mask", np.uint8, n),
                                 ("no_loss", np.bool_, n), *((name, t, slots) for name, t in ARENA)])
        flat, labels, no_loss = mem["ids"], mem["flat_labels"], mem["no_loss"]
        np.concatenate(take(ids, order, cut), out=flat)
        if self._mask_runs is None:
            np.equal(np.concatenate(take(masks, order, cut), out=mem["mask"]), 0, out=no_loss)
        else:  # expand the rows' runs, gathered in batch order
            run_lens, run_no_loss, first, count = self._mask_runs
            first, count = first[pos[order]], count[pos[order]]
            k = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(count.sum())
            no_loss = np.repeat(run_no_loss[k], run_lens[k])
        np.copyto(labels, flat)
        np.copyto(labels, np.int32(IGNORE), where=no_loss)
        extra = {c: np.concatenate(v)[order] if isinstance(v[0], np.ndarray)
                 else list(take([x for part in v for x in part], order)) for c, v in extra.items()}
        buf = Buffer(self._rows[pos][order], lens, np.cumsum(lens) - lens, flat, labels, extra, spans)
        if pad:  # row r of batch b fills arena[offset_b + r * width_b:][:width_b], left-aligned
            runs = np.empty(2 * len(lens), np.int64)  # per row: its tokens, then its padding
            # `real` marks token slots (vs padding) of the whole arena, in one repeat
            runs[0::2], runs[1::2] = lens, np.repeat(widths, sizes) - lens
            real = np.repeat(np.tile(np.array([True, False]), len(lens)), runs)
            buf.arena = arena = {name: mem[name] for name, _ in ARENA}
            for name, fill in (("input_ids", self.pad_id), ("labels", IGNORE), ("loss_mask", 0)):
                arena[name].fill(fill)
            np.copyto(arena["attention_mask"], real)
            arena["input_ids"][real], arena["labels"][real], arena["loss_mask"][real] = flat, labels, no_loss
            np.bitwise_xor(arena["loss_mask"], real.view(np.uint8), out=arena["loss_mask"])  # real & ~no_loss
        return buf

    def _buffers(self, epoch: int, pad: bool = True) -> Iterator[Buffer]:
        """Buffers in plan order, `prefetch` of them built ahead by as many threads (Deeplake reads and
        large numpy steps release the GIL, so this overlaps with the consumer's work)."""
        plan = self.plan(epoch)
        if not self.prefetch:
            yield from (self.load(pos, batches, pad) for pos, batches in plan)
            return
        with ThreadPoolExecutor(self.prefetch) as pool:
            pending = deque(pool.submit(self.load, *step, pad) for step in plan[:self.prefetch])
            for k in range(len(plan)):
                buf = pending.popleft().result()
                if k + self.prefetch < len(plan):
                    pending.append(pool.submit(self.load, *plan[k + self.prefetch], pad))
                yield buf

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stats = self.stats = dict.fromkeys(self.stats, 0)
        for buf in self._buffers(self.epoch):
            for first, n, offset, width in buf.spans:
                out: dict[str, Any] = {k: torch.from_numpy(a[offset:offset + n * width].reshape(n, width))
                                       for k, a in buf.arena.items()}
                out["row_index"] = torch.from_numpy(buf.rows[first:first + n])
                for c, values in buf.extra.items():
                    part = values[first:first + n]
                    numeric = isinstance(part, np.ndarray) and part.dtype.kind in "biuf"
                    out[c] = torch.from_numpy(part) if numeric else part
                stats["batches"] += 1
                stats["rows"] += n
                stats["slots"] += n * width
                stats["tokens"] += int(buf.lens[first:first + n].sum())
                yield out

    def iter_rows(self, epoch: int | None = None) -> Iterator[dict[str, list[int]]]:
        """Rows in batch order as `{"input_ids": [...], "assistant_masks": [...]}`: TRL's pre-tokenized
        form, truncated and filtered like `sft.prepare_rows`."""
        for buf in self._buffers(self.epoch if epoch is None else epoch, pad=False):
            for s, k in zip(buf.starts.tolist(), buf.lens.tolist(), strict=True):
                yield {"input_ids": buf.ids[s:s + k].tolist(),
                       "assistant_masks": (buf.labels[s:s + k] != IGNORE).astype(np.int64).tolist()}


def _iterable_rows(config: dict[str, Any], epochs: int | None) -> Iterator[dict[str, list[int]]]:
    loader = CorpusLoader(**config)
    for epoch in range(loader.epoch, sys.maxsize if epochs is None else loader.epoch + epochs):
        yield from loader.iter_rows(epoch)


def to_iterable_dataset(loader_or_ref: CorpusLoader | str, *, epochs: int | None = 1, **kwargs: Any) -> Any:
    """A `datasets.IterableDataset` of the loader's rows in its order, for TRL's SFTTrainer (which then
    needs `max_steps`). It holds the loader's settings, not the loader, so it pickles and reopens the
    pinned version wherever it is iterated. `epochs=None` cycles forever with a new shuffle per pass
    (the Trainer would otherwise replay one order each time it re-iterates)."""
    import datasets

    base = loader_or_ref.config if isinstance(loader_or_ref, CorpusLoader) else {"ref": loader_or_ref}
    column = datasets.List(datasets.Value("int64"))
    return datasets.IterableDataset.from_generator(
        _iterable_rows, features=datasets.Features({"input_ids": column, "assistant_masks": column}),
        gen_kwargs={"config": {**base, **kwargs}, "epochs": epochs})
