"""Streaming benchmark: CorpusLoader vs `ds.pytorch()`, a Hugging Face Arrow dataset and JSONL.

Every path ends in the same padded torch batches (input_ids, attention_mask, labels, loss_mask; batch 16,
max_length 512) and tokens/s counts real (non-pad) tokens per wall second. The throughput corpus is ~50k
rows of random token ids, 256-512 tokens each; padding (length grouping vs plain batching) is measured on
a second corpus whose lengths follow the demo world's (real scripted-agent rollouts tokenized like
`tracemill.yaml`: byte BPE of 384, tools not in the prompt). The slow baselines run for a capped time and
are extrapolated. The box may be shared: the JSON carries the load average and tokens per CPU-second.

    .venv/bin/python bench/stream.py [--rows 50000] [--cap 4]

Progress goes to stderr; stdout gets one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from random import Random
from typing import Any

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.corpus.store import open_corpus, snapshot  # noqa: E402
from pipeline.train.loader import IGNORE, CorpusLoader  # noqa: E402

BATCH, MAX_LEN = 16, 512


def log(msg: str) -> None:
    print(f"[stream] {msg}", file=sys.stderr, flush=True)


def demo_lengths(n: int = 2000) -> np.ndarray:
    """Token counts of real demo trajectories (the four scripted agents, random tasks)."""
    from pipeline.chat.tracemill import render_text
    from pipeline.demo.agents import AGENTS, policy_for
    from pipeline.demo.rollout import rollout
    from pipeline.demo.world import make_task
    from pipeline.train.tiny_model import train_tokenizer

    rng, agents, texts = Random(0), list(AGENTS), []
    for i in range(n):
        task = make_task(rng)
        texts.append(render_text(rollout(policy_for(agents[i % len(agents)], task, seed=i), task)[0]))
    tok = train_tokenizer(texts[:400], 384)
    return np.array([len(ids) for ids in tok(texts)["input_ids"]])


def build_rows(n: int, lengths: np.ndarray) -> pl.DataFrame:
    """Random ids (vocab 32k), lengths drawn from `lengths`; loss on the last ~60% of a row (the replies)."""
    rng = np.random.default_rng(0)
    lens = rng.choice(lengths, n)
    flat = rng.integers(0, 32_000, int(lens.sum()), dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    mask = np.ones(int(lens.sum()), np.uint8)
    for s, k in zip(offsets[:-1].tolist(), lens.tolist(), strict=True):
        mask[s:s + int(k * 0.4)] = 0
    lists = {name: pl.Series(name, [a[offsets[i]:offsets[i + 1]] for i in range(n)], dtype=pl.List(dt))
             for name, a, dt in (("input_ids", flat, pl.Int32), ("loss_mask", mask, pl.UInt8))}
    return pl.DataFrame({"trajectory_id": [f"t{i:06d}" for i in range(n)],
                         "split": ["eval" if i % 10 == 0 else "train" for i in range(n)],
                         **lists, "n_tokens": lens.astype(np.int32)})


def collate(ids: list[Any], masks: list[Any]) -> tuple[dict[str, torch.Tensor], int]:
    """The baselines' collate: the loader's tensors, padded with numpy per batch (a fast, fair one)."""
    ids = [np.asarray(a)[:MAX_LEN] for a in ids]
    lens = np.array([len(a) for a in ids])
    out_ids, out_mask = np.zeros((len(ids), lens.max()), np.int64), np.zeros((len(ids), lens.max()), np.uint8)
    for j, (a, m) in enumerate(zip(ids, masks, strict=True)):
        out_ids[j, :len(a)], out_mask[j, :len(a)] = a, np.asarray(m)[:len(a)] != 0
    att = (np.arange(lens.max()) < lens[:, None]).astype(np.int64)
    labels = np.where(out_mask != 0, out_ids, IGNORE)
    batch = {"input_ids": torch.from_numpy(out_ids), "attention_mask": torch.from_numpy(att),
             "labels": torch.from_numpy(labels), "loss_mask": torch.from_numpy(out_mask)}
    return batch, int(lens.sum())


def timed(batches: Any, cap_s: float) -> dict[str, float]:
    """Tokens/s of an iterator of (batch, tokens), stopped after `cap_s` seconds."""
    tokens = rows = 0
    start = time.perf_counter()
    for batch, n in batches:
        tokens, rows = tokens + n, rows + len(batch["input_ids"])
        if time.perf_counter() - start > cap_s:
            break
    seconds = time.perf_counter() - start
    return {"tokens_per_s": round(tokens / seconds), "rows_measured": rows, "seconds": round(seconds, 3)}


def bench_loader(ref: str, root: str, epochs: int = 3, **kw: Any) -> dict[str, Any]:
    start = time.perf_counter()
    loader = CorpusLoader(ref, root=root, batch_size=BATCH, max_length=MAX_LEN, **kw)
    init = time.perf_counter() - start
    best: dict[str, Any] = {}
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in loader:
            pass
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rate = loader.stats["tokens"] / wall
        if rate > best.get("tokens_per_s", 0):
            best = {"tokens_per_s": round(rate), "tokens_per_cpu_s": round(loader.stats["tokens"] / cpu),
                    "epoch_s": round(wall, 3), "tokens": loader.stats["tokens"],
                    "batches": loader.stats["batches"], "padding_fraction": round(loader.padding_fraction, 4)}
    return {**best, "init_s": round(init, 3), "rows": loader.num_rows}


def bench_pytorch(ref: str, root: str, cap_s: float) -> dict[str, float]:
    """`ds.pytorch()` over just the two token columns (3x faster than all columns), shuffled like ours."""
    corpus = open_corpus(ref, root)
    view = corpus.dataset.query("SELECT input_ids, loss_mask")

    def rows_collate(rs: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], int]:
        return collate([r["input_ids"] for r in rs], [r["loss_mask"] for r in rs])

    dl = torch.utils.data.DataLoader(view.pytorch(), batch_size=BATCH, shuffle=True, num_workers=0,
                                     collate_fn=rows_collate)
    return timed(iter(dl), cap_s)


def bench_hf(df: pl.DataFrame, cap_s: float) -> dict[str, float]:
    """An in-memory Arrow `datasets.Dataset`, `with_format("torch")`, iterated in order (its best case)."""
    import datasets

    ds = datasets.Dataset(df.select("input_ids", "loss_mask").to_arrow()).with_format("torch")
    return timed((collate(b["input_ids"], b["loss_mask"]) for b in ds.iter(batch_size=BATCH)), cap_s)


def bench_jsonl(df: pl.DataFrame, folder: Path, cap_s: float, rows: int = 10_000) -> dict[str, float]:
    path = folder / "rows.jsonl"
    df.head(rows).select("input_ids", "loss_mask").write_ndjson(path)

    def batches():
        with path.open() as f:
            chunk = []
            for line in f:
                chunk.append(json.loads(line))
                if len(chunk) == BATCH:
                    yield collate([r["input_ids"] for r in chunk], [r["loss_mask"] for r in chunk])
                    chunk = []
    return timed(batches(), cap_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--cap", type=float, default=4.0, help="seconds per capped baseline")
    args = ap.parse_args()
    load_before, t0 = os.getloadavg()[0], time.perf_counter()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="tracemill-stream-") as tmp:
        root, ref = f"file://{tmp}/corpora", "bench/stream@v1"
        df = build_rows(args.rows, np.arange(256, 513))
        snapshot(df, "bench/stream", root=root)
        log(f"corpus {df.height} rows, {int(df['n_tokens'].sum())} tokens ({time.perf_counter() - t0:.1f}s)")
        loaders = {f"prefetch_{p}": bench_loader(ref, root, prefetch=p) for p in (1, 2, 0)}
        best = max(loaders.values(), key=lambda r: r["tokens_per_s"])
        rate = best["tokens_per_s"]
        log(f"loader: {rate / 1e6:.1f}M tokens/s")
        query = bench_loader(ref, root, epochs=2, query='SELECT * WHERE "split" = \'eval\'')
        plain_main = bench_loader(ref, root, epochs=1, group_by_length=False)
        lengths = demo_lengths()
        log(f"demo lengths: p10/p50/p90 {np.percentile(lengths, [10, 50, 90]).tolist()}")
        snapshot(build_rows(20_000, lengths), "bench/demo", root=root)
        grouped, plain = (bench_loader("bench/demo@v1", root, epochs=2, group_by_length=g)
                          for g in (True, False))
        base = {"pytorch": bench_pytorch(ref, root, args.cap), "hf_arrow": bench_hf(df, args.cap),
                "jsonl": bench_jsonl(df, Path(tmp), args.cap)}
        log(", ".join(f"{k}: {v['tokens_per_s'] / 1e6:.2f}M tokens/s" for k, v in base.items()))
    speed = {k: round(rate / v["tokens_per_s"], 1) for k, v in base.items()}
    print(json.dumps({
        "rows": args.rows, "tokens": int(df["n_tokens"].sum()), "batch_size": BATCH, "max_length": MAX_LEN,
        "cpus": os.cpu_count(), "loadavg_before": round(load_before, 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
        "loader_tokens_per_s": round(rate), "loader_tokens_per_cpu_s": round(best["tokens_per_cpu_s"]),
        **{f"{k}_tokens_per_s": round(v["tokens_per_s"]) for k, v in base.items()},
        **{f"speedup_vs_{k}": v for k, v in speed.items()},
        "padding_demo_grouped": grouped["padding_fraction"], "padding_demo_plain": plain["padding_fraction"],
        "padding_main_grouped": best["padding_fraction"],
        "padding_main_plain": plain_main["padding_fraction"],
        "demo_length_p10_p50_p90": np.percentile(lengths, [10, 50, 90]).round().astype(int).tolist(),
        "loader_demo_tokens_per_s": round(grouped["tokens_per_s"]),
        "loader_query_eval_tokens_per_s": round(query["tokens_per_s"]), "loader_init_s": best["init_s"],
        "loader": loaders, "baselines": base,
        "targets_met": {"100M_tokens_per_s": rate >= 1e8, "3x_hf": speed["hf_arrow"] >= 3,
                        "20x_pytorch": speed["pytorch"] >= 20,
                        "padding_under_10pct": grouped["padding_fraction"] < 0.1},
        "total_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
