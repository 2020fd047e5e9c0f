"""DPO and KTO with TRL on the tiny model: exact tokenization and masks, learning, checkpoints, MLflow runs."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.chat import tokenize_conversation
from pipeline.train.preference import _build_pref, train_dpo, train_kto
from pipeline.train.recipes import PrefRecipe
from pipeline.train.text_columns import completion_text, dpo_dataset, kto_dataset, prompt_text
from pipeline.train.tool_masking import assistant_only
from tests.conftest_model import TOOLS, make_conversations


def _bad(convo: list[dict]) -> list[dict]:
    """The same attempt with a mis-copied price and a wrong final answer."""
    bad = json.loads(json.dumps(convo))
    bad[3]["content"] = "oops"
    bad[-1]["content"] = "I don't know"
    return bad


@pytest.fixture(scope="module")
def convos():
    return make_conversations(6, seed=3)


@pytest.fixture(scope="module")
def dpo_rows(convos):
    return [{"prompt": json.dumps(c[:2]), "chosen": json.dumps(c[2:]), "rejected": json.dumps(_bad(c)[2:]),
             "tools": json.dumps(TOOLS)} for c in convos]


@pytest.fixture(scope="module")
def kto_rows(convos):
    return [{"prompt": json.dumps(c[:2]), "completion": json.dumps((c if i % 2 else _bad(c))[2:]),
             "label": bool(i % 2), "tools": json.dumps(TOOLS)} for i, c in enumerate(convos)]


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    from pipeline.tracking import MlflowTracker

    t = MlflowTracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}", "test-pref")
    t.ensure_db()
    return t


def test_rendering_and_skips(dpo_rows):
    row = dpo_rows[0]
    assert prompt_text(row["prompt"], row["tools"]).endswith("<|end|><|assistant|>")
    assert completion_text(row["chosen"]).startswith("<tool_call>") and completion_text(row["chosen"]).endswith("<|end|>")
    with pytest.raises(ValueError, match="assistant"):
        completion_text(row["prompt"])
    data, skipped = dpo_dataset([*dpo_rows[:2], {**row, "rejected": row["chosen"]}, {"prompt": "[]"}])
    assert len(data) == 2 and skipped == 2
    data, skipped = kto_dataset([{**row, "completion": row["chosen"], "label": 1}, {"prompt": row["prompt"]}])
    assert data[0]["label"] is True and skipped == 1


def test_assistant_only_mask_drops_tool_turns():
    import torch

    a, e, t = 1, 2, 3  # assistant header, end, tool header; 9 = other tokens; prompt is the first 2 tokens
    ids = torch.tensor([[5, a, 9, 9, e, t, 9, e, a, 9, e, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]])
    assert assistant_only(ids, mask, a, e).tolist() == [[0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0]]


@pytest.mark.parametrize("kind", ["dpo", "kto"])
def test_trl_tokenization_matches_chat_format(kind, tiny_model_dir, convos, dpo_rows, kto_rows, tmp_path):
    """TRL's own tokenization of our text equals `tokenize_conversation` (no extra BOS/EOS), and the loss
    mask after our collator equals the chat format's mask: assistant bodies only, tool results excluded."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    recipe = PrefRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path), trainer=kind, device="cpu")
    data = dpo_dataset(dpo_rows)[0] if kind == "dpo" else kto_dataset(kto_rows)[0]
    trainer = _build_pref(kind, data, recipe)([])
    ds = trainer.train_dataset
    key = "chosen_ids" if kind == "dpo" else "completion_ids"
    batch = trainer.data_collator([ds[0], ds[1]])
    for i in (0, 1):
        convo = convos[i] if kind == "dpo" or i % 2 else _bad(convos[i])
        ids, mask = tokenize_conversation(tok, convo, TOOLS)
        assert ds[i]["prompt_ids"] + ds[i][key] == ids
        assert ids.count(tok.eos_token_id) == len(convo) + 1  # one per turn and the tool list: no extra EOS
        n = len(ids)
        assert batch["input_ids"][i, :n].tolist() == ids and batch["completion_mask"][i, :n].tolist() == mask
        assert batch["completion_mask"][i, n:].sum() == 0
    if kind == "kto":  # the KL sequences (prompt i + completion i-1) are masked the same way
        kl = batch["KL_completion_mask"][1][batch["KL_attention_mask"][1].bool()]
        assert kl.sum() == sum(tokenize_conversation(tok, _bad(convos[0]), TOOLS)[1])


def _margin(model_dir, pairs) -> float:
    """Mean log p(chosen | prompt) - log p(rejected | prompt) under a saved model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)

    def logp(prompt: str, completion: str) -> float:
        p, c = tok(prompt)["input_ids"], tok(completion)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:-1]
        return logits.log_softmax(-1).gather(1, torch.tensor(c)[:, None]).sum().item()

    return sum(logp(d["prompt"], d["chosen"]) - logp(d["prompt"], d["rejected"]) for d in pairs) / len(pairs)


def test_dpo_separable_pair_widens_margin(tiny_model_dir, tracker, tmp_path):
    system = {"role": "system", "content": "Use tools."}
    rows = []
    for item in ("pear", "milk"):
        call = {"role": "assistant", "tool_calls": [{"id": "c1", "name": "lookup_price",
                                                     "arguments": json.dumps({"item": item})}]}
        rows.append({"prompt": json.dumps([system, {"role": "user", "content": f"Price of 2 {item}?"}]),
                     "chosen": json.dumps([call]), "rejected": json.dumps([{"role": "assistant", "content": "No."}])})
    recipe = PrefRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "dpo"), max_steps=30,
                        per_device_batch_size=2, learning_rate=3e-3, beta=0.1, device="cpu", max_length=256)
    res = train_dpo(rows, recipe, tracker=tracker, run_tags={"corpus": "pairs@v1"})
    assert res.steps == 30 and len(res.losses) == 30 and all(math.isfinite(x) for x in res.losses)
    assert res.losses[-1] < 0.5 * res.losses[0] and res.tokens_per_second > 0
    pairs = dpo_dataset(rows)[0]
    before, after = _margin(tiny_model_dir, pairs), _margin(res.checkpoint_dir, pairs)
    assert after > before + 5, (before, after)

    run = tracker.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trainer"] == "dpo" and run.data.tags["corpus"] == "pairs@v1"
    assert run.data.params["beta"] == "0.1" and run.data.params["train_rows"] == "2"
    margins = [m.value for m in sorted(tracker.client.get_metric_history(res.mlflow_run_id, "rewards/margins"),
                                       key=lambda m: m.step)]
    assert len(margins) == 30 and margins[-1] > margins[0] + 1
    assert run.data.metrics["rewards/accuracies"] == 1.0 and "tokens_per_second" in run.data.metrics
    assert 0 <= run.data.metrics["padding_fraction"] < 1  # prompt/chosen/rejected masks of the DPO batches
    print(f"\nDPO tiny model on CPU: {res.steps_per_second:.1f} steps/s, margin {before:.1f} -> {after:.1f}")


def test_kto_with_lora_trains_and_saves_plain_model(tiny_model_dir, kto_rows, tracker, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = PrefRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "kto"), trainer="kto",
                        max_steps=3, per_device_batch_size=2, lora=True, lora_r=4, lora_alpha=8, device="cpu")
    res = train_kto(kto_rows, recipe, tracker=tracker)
    assert res.steps == 3 and all(math.isfinite(x) for x in res.losses) and res.train_rows == 6
    model = AutoModelForCausalLM.from_pretrained(res.checkpoint_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and not any("lora" in n for n, _ in model.named_parameters())
    assert any((p != q).any() for p, q in zip(model.parameters(), base.parameters(), strict=True))  # merged
    run = tracker.get_run(res.mlflow_run_id)
    assert run.data.params["lora"] == "True" and run.data.params["desirable_rows"] == "3"
    assert {"loss", "kl", "rewards/margins"} <= set(run.data.metrics)
    assert "num_tokens" not in run.data.metrics and int(run.data.tags["num_tokens"]) > 0  # a count: a tag, not a chart
    with pytest.raises(ValueError, match="not 'dpo'"):
        train_dpo([], recipe)
    with pytest.raises(ValueError, match=">= 2"):
        train_kto(kto_rows, recipe.model_copy(update={"per_device_batch_size": 1}))
