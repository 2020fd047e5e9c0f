"""Packing: several sequences per row of a fixed width, isolated from each other, for the loader's
epoch. A pack never lets one sample attend to another: `position_ids` restart per sequence (and
`mask_4d` adds the block-diagonal causal mask explicitly); tests/test_loader.py checks that a
sample's logits do not change when another is packed beside it."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import numpy as np
import torch

from pipeline.train.blocks import IGNORE, Buffer
from pipeline.train.loader import CorpusLoader


def _pack(lens: np.ndarray, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: each sequence goes into the fullest pack it still fits (few, full packs)."""
    free: list[tuple[int, int]] = []  # (space left, pack number), sorted
    packs: list[list[int]] = []
    for i in np.argsort(-lens, kind="stable").tolist():
        k = bisect.bisect_left(free, (int(lens[i]), -1))
        space, p = free.pop(k) if k < len(free) else (capacity, len(packs))
        if p == len(packs):
            packs.append([])
        packs[p].append(i)
        if space > lens[i]:
            bisect.insort(free, (space - int(lens[i]), p))
    return packs


def packed_batches(loader: CorpusLoader, *, pack_length: int | None = None, rows: int = 1,
                   mask_4d: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Several sequences per row (best fit within each buffer of the loader's epoch), `rows` rows a batch.

    `position_ids` restart at 0 per sequence (padding is a segment of its own), which transformers 5
    turns into a block-diagonal causal mask for sdpa/eager when no `attention_mask` is passed and no
    cache is used (`use_cache=False`); flash-attention varlen reads `cu_seq_lens` over the flattened
    rows. `mask_4d=True` adds that mask explicitly, float [R, 1, P, P] with 0 = attend (R*P*P*4 bytes).
    The first token of each sequence gets no label: it would be predicted from the previous sequence."""
    width = pack_length or loader.max_length
    for buf in loader._buffers(loader.epoch, pad=False):
        packs = _pack(np.minimum(buf.lens, width), width)
        for g in range(0, len(packs), rows):
            yield _collate_packed(buf, packs[g:g + rows], width, loader.pad_id, mask_4d)


def _collate_packed(buf: Buffer, packs: list[list[int]], width: int, pad_id: int,
                    mask_4d: bool) -> dict[str, torch.Tensor]:
    ids = np.full((len(packs), width), pad_id, np.int64)
    labels = np.full_like(ids, IGNORE)
    positions, segments = np.zeros_like(ids), np.zeros_like(ids)
    seg_lens, seq_lens = [], []
    for r, pack in enumerate(packs):
        o = 0
        for s, k in ((int(buf.starts[i]), min(int(buf.lens[i]), width)) for i in pack):
            ids[r, o:o + k], labels[r, o:o + k], labels[r, o] = buf.ids[s:s + k], buf.labels[s:s + k], IGNORE
            positions[r, o:o + k], segments[r, o:o + k] = np.arange(k), len(seg_lens)
            seg_lens.append(k)
            seq_lens.append(k)
            o += k
        if o < width:  # padding: its own segment, so no row of the mask is empty
            positions[r, o:], segments[r, o:] = np.arange(width - o), len(seg_lens)
            seg_lens.append(width - o)
    out = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
           "position_ids": torch.from_numpy(positions), "seq_lens": torch.tensor(seq_lens, dtype=torch.int32),
           "cu_seq_lens": torch.tensor(np.cumsum([0, *seg_lens]), dtype=torch.int32),
           "row_index": torch.from_numpy(buf.rows[[i for p in packs for i in p]])}
    if mask_4d:
        allowed = (segments[:, :, None] == segments[:, None, :]) & np.tri(width, dtype=bool)
        mask = np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)
        out["attention_mask"] = torch.from_numpy(mask[:, None])
    return out
