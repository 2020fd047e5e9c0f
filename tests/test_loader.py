"""CorpusLoader on real Deeplake corpora in tmp_path: order, sharding, labels, slices, versions, packing."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.corpus.store import open_corpus, snapshot
from pipeline.train.loader import CorpusLoader, to_iterable_dataset
from pipeline.train.packing import packed_batches
from pipeline.train.sft import prepare_rows

ML = 40  # max_length: some rows are longer, so truncation is exercised
EVAL = 'SELECT * WHERE "split" = \'eval\''


def make_rows(n: int, seed: int = 0, start: int = 0, spans: bool = False) -> pl.DataFrame:
    """Token ids < 64 (the tiny packing model's vocabulary), lengths 3..59, masks random or one span, and
    untrainable rows: all-zero masks, loss on the never-predicted first token only, loss only past ML."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 60, n)
    ids = [rng.integers(1, 64, k).astype(np.int32) for k in lens]
    masks = [(np.arange(k) >= k // 3 if spans else rng.random(k) < 0.6).astype(np.uint8) for k in lens]
    for i, k in enumerate(lens):
        if i % 17 == 3:
            masks[i][:] = 0
        elif i % 19 == 4:
            masks[i][:] = 0
            masks[i][0] = 1
        elif i % 23 == 5 and k > ML + 2:
            masks[i][:ML + 1] = 0
    return pl.DataFrame({
        "trajectory_id": [f"t{start + i:05d}" for i in range(n)],
        "split": ["eval" if i % 5 == 0 else "train" for i in range(n)],
        "reward": rng.random(n).astype(np.float32),
        "input_ids": pl.Series([a.tolist() for a in ids], dtype=pl.List(pl.Int32)),
        "loss_mask": pl.Series([m.tolist() for m in masks], dtype=pl.List(pl.UInt8)),
        "n_tokens": lens.astype(np.int32)})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, str, list[dict]]:
    root = f"file://{tmp_path_factory.mktemp('corpora')}"
    snapshot(make_rows(300), "org/sft", root=root)
    return "org/sft@v1", root, open_corpus("org/sft@v1", root).rows(["input_ids", "loss_mask", "split"])


def trainable(rows: list[dict]) -> set[int]:
    return {i for i, r in enumerate(rows) if prepare_rows([r], ML)[0]}


def loader(corpus, **kw) -> CorpusLoader:
    ref, root, _ = corpus
    return CorpusLoader(ref, root=root, **{"batch_size": 8, "max_length": ML, "block_size": 32, **kw})


def digest(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            h.update(k.encode() + b[k].numpy().tobytes())
    return h.hexdigest()


def first(it, n: int = 4) -> list:
    return [b for b, _ in zip(it, range(n), strict=False)]


@pytest.mark.parametrize("cache_masks", [False, True])  # masks read per buffer / run-length coded once
def test_batches_hold_the_stored_rows_with_exact_labels(corpus, cache_masks):
    rows, ld = corpus[2], loader(corpus, cache_masks=cache_masks)
    assert (ld._mask_runs is not None) == cache_masks
    batches, seen = list(ld), []
    assert len(batches) == len(ld) and ld.num_rows == len(trainable(rows)) < len(rows)
    for b in batches:
        assert b["input_ids"].dtype == b["labels"].dtype == torch.long and b["loss_mask"].dtype == torch.uint8
        pad = b["attention_mask"] == 0
        assert torch.equal(b["labels"] == -100, (b["loss_mask"] == 0) | pad)  # the contract, exactly
        assert torch.equal(b["labels"][b["labels"] != -100], b["input_ids"][b["labels"] != -100])
        for j, r in enumerate(b["row_index"].tolist()):
            ids, mask = rows[r]["input_ids"][:ML], rows[r]["loss_mask"][:ML]
            k = len(ids)
            assert b["input_ids"][j, :k].tolist() == ids.tolist() and not b["input_ids"][j, k:].any()
            assert b["attention_mask"][j].tolist() == [1] * k + [0] * (b["input_ids"].shape[1] - k)
            assert b["loss_mask"][j, :k].tolist() == (mask != 0).astype(int).tolist()
        seen += b["row_index"].tolist()
    assert sorted(seen) == sorted(trainable(rows))  # every trainable row once, truncation-aware


def test_same_seed_and_epoch_give_identical_batches(corpus):
    a, b = loader(corpus, seed=7), loader(corpus, seed=7)
    assert digest(first(a)) == digest(first(b))
    b.set_epoch(1)
    assert digest(first(a)) != digest(first(b))
    assert digest(first(b)) == digest(first(loader(corpus, seed=7, epoch=1)))
    assert digest(first(a)) != digest(first(loader(corpus, seed=8)))
    assert digest(first(loader(corpus, prefetch=0, seed=7))) == digest(first(a))
    assert digest(loader(corpus, cache_masks=True)) == digest(loader(corpus, cache_masks=False))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_cover_every_row_exactly_once(corpus, world):
    expected = sorted(trainable(corpus[2]))
    for epoch in (0, 1):
        seen = []
        for rank in range(world):
            ld = loader(corpus, rank=rank, world_size=world, epoch=epoch)
            batches = list(ld)
            assert len(batches) == len(ld)
            seen += [r for b in batches for r in b["row_index"].tolist()]
        assert sorted(seen) == expected
    dropped = [loader(corpus, rank=r, world_size=world, drop_last=True) for r in range(world)]
    counts = {len(list(ld)) for ld in dropped} | {len(ld) for ld in dropped}
    assert len(counts) == 1  # DDP lockstep: same number of (full) batches on every rank
    assert len({len(loader(corpus, rank=r, world_size=world, pad_shards=True, batch_size=5))
                for r in range(world)}) == 1


def test_length_grouping_cuts_padding(corpus):
    grouped, plain = loader(corpus), loader(corpus, group_by_length=False)
    for ld in (grouped, plain):
        for _ in ld:
            pass
        assert ld.padding_fraction == pytest.approx(ld.plan_padding())
    assert grouped.padding_fraction < plain.padding_fraction / 2


def test_query_slice_yields_only_its_rows(corpus):
    rows = corpus[2]
    ld = loader(corpus, query=EVAL, columns=("input_ids", "loss_mask", "split", "reward"))
    batches = list(ld)
    got = [r for b in batches for r in b["row_index"].tolist()]
    assert sorted(got) == sorted(i for i in trainable(rows) if rows[i]["split"] == "eval")
    assert all(s == "eval" for b in batches for s in b["split"])
    assert batches[0]["reward"].dtype == torch.float32
    with pytest.raises(ValueError, match="SELECT"):
        loader(corpus, query='SELECT input_ids WHERE "split" = \'eval\'')


def test_pinned_version_survives_a_new_snapshot(tmp_path):
    root = f"file://{tmp_path}"
    snapshot(make_rows(120, spans=True), "org/pin", root=root)
    kw = {"root": root, "batch_size": 8, "max_length": ML, "block_size": 16}
    v1 = CorpusLoader("org/pin@v1", **kw)
    assert v1._mask_runs is not None  # span masks: run-length coded at construction (auto)
    before = digest(v1)
    assert digest(CorpusLoader("org/pin@v1", cache_masks=False, **kw)) == before
    changed = make_rows(120, seed=1)  # same trajectory ids, other tokens
    snapshot(pl.concat([changed, make_rows(40, seed=2, start=500)]), "org/pin", root=root)
    assert digest(CorpusLoader("org/pin@v1", **kw)) == before
    assert digest(CorpusLoader("org/pin@v2", **kw)) != before


def test_iterable_dataset_feeds_training_rows(corpus):
    ld = loader(corpus, seed=3)
    order = [r for b in ld for r in b["row_index"].tolist()]
    got = list(to_iterable_dataset(ld))
    ids, masks, _ = prepare_rows([corpus[2][r] for r in order], ML)  # what training.py would build
    assert [g["input_ids"] for g in got] == ids and [g["assistant_masks"] for g in got] == masks
    two = list(to_iterable_dataset(ld, epochs=2))
    assert two[:len(got)] == got and two[len(got):] != got and len(two) == 2 * len(got)


def test_trl_trains_from_the_iterable_dataset(corpus, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from pipeline.train.recipes import SFTRecipe
    from pipeline.train.sft import sft_config
    from pipeline.train.tracked_run import quiet_progress

    recipe = SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path), max_steps=2,
                       per_device_batch_size=4, max_length=ML, device="cpu")
    with quiet_progress():
        data = to_iterable_dataset(loader(corpus), epochs=None)  # TRL needs max_steps with an iterable
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        trainer = SFTTrainer(model=model, args=sft_config(recipe), train_dataset=data,
                             processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
        batch = next(iter(trainer.get_train_dataloader()))
        state = trainer.train()
    assert state.global_step == 2 and np.isfinite(state.training_loss)
    assert ((batch["labels"] == -100) | (batch["labels"] == batch["input_ids"])).all()
    assert (batch["labels"] != -100).any()


def tiny_llama(attn: str, arch: str = "llama"):
    """A one-layer model of a real family's architecture: Llama (as the tiny model), SmolLM2's shape (Llama
    with grouped-query attention and tied embeddings) or Qwen2's (GQA, biased q/k/v projections)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=1, vocab_size=64, max_position_embeddings=256)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**shape, num_attention_heads=6, num_key_value_heads=2))
    elif arch == "smollm2":
        model = LlamaForCausalLM(LlamaConfig(**shape, num_attention_heads=6, num_key_value_heads=2,
                                             tie_word_embeddings=True, rope_theta=100000.0))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape, num_attention_heads=2, num_key_value_heads=2))
    model.config._attn_implementation = attn
    return model.eval()


@pytest.mark.parametrize("attn,mask_4d,arch", [("sdpa", False, "llama"), ("eager", False, "llama"),
                                               ("eager", True, "llama"), ("sdpa", True, "llama"),
                                               ("sdpa", False, "smollm2"), ("sdpa", False, "qwen2"),
                                               ("eager", True, "qwen2")])
def test_packed_samples_do_not_see_each_other(corpus, attn, mask_4d, arch):
    """Position ids restart per packed sequence, so a sample's logits are the same packed or alone, for the
    tiny model's architecture and for the real families' (GQA, RoPE bases, biased projections)."""
    rows, model = corpus[2], tiny_llama(attn, arch)
    packs = packed_batches(loader(corpus), pack_length=96, mask_4d=mask_4d)
    batch = next(b for b in packs if len(b["seq_lens"]) >= 3)
    assert batch["cu_seq_lens"][-1] == 96 and batch["input_ids"].shape == (1, 96)
    extra = {"attention_mask": batch["attention_mask"]} if mask_4d else {}
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                       **extra).logits[0]
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        o = 0
        for k, r in zip(batch["seq_lens"].tolist(), batch["row_index"].tolist(), strict=True):
            ids = torch.as_tensor(rows[r]["input_ids"][:k], dtype=torch.long)
            assert torch.equal(batch["input_ids"][0, o:o + k], ids)
            assert batch["labels"][0, o] == -100  # never predicted from the previous sample
            alone = model(input_ids=ids[None], use_cache=False).logits[0]
            torch.testing.assert_close(packed[o:o + k], alone, atol=1e-5, rtol=1e-4)
            if o:
                assert not torch.allclose(leaky[o:o + k], alone, atol=1e-3)  # the check can fail
            o += k
