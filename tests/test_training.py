"""SFT with TRL on the tiny model: masks reach the loss, loss goes down, checkpoint and MLflow run exist."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from pipeline.chat import tokenize_conversation
from pipeline.train.recipes import SFTRecipe
from pipeline.train.sft import build_trainer, prepare_rows, train_sft, train_sft_corpus
from tests.conftest_model import TOOLS, make_conversations

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = []
    for convo in make_conversations(8, seed=1):
        ids, mask = tokenize_conversation(tok, convo, TOOLS)
        out.append({"input_ids": ids, "loss_mask": mask})
    return out


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    from pipeline.tracking import MlflowTracker

    root = tmp_path_factory.mktemp("mlflow")
    t = MlflowTracker(f"sqlite:///{root / 'mlflow.db'}", "test-sft")
    t.ensure_db()
    return t


def test_prepare_rows_drops_untrainable_and_truncates():
    import numpy as np

    rows = [{"input_ids": np.arange(10), "loss_mask": np.array([0] * 6 + [1] * 4)},
            {"input_ids": [1, 2, 3], "loss_mask": [0, 0, 0]},
            {"input_ids": [1, 2, 3], "loss_mask": [1, 0, 0]}]  # only the unpredicted first token: useless
    ids, masks, skipped = prepare_rows(rows, max_length=8)
    assert skipped == 2 and ids == [list(range(8))] and masks == [[0] * 6 + [1] * 2]
    with pytest.raises(ValueError, match="trainable"):
        train_sft(rows[1:], SFTRecipe(base_model="unused", output_dir="/nonexistent"))


def test_trl_turns_masks_into_labels(tiny_model_dir, rows, tmp_path):
    """Read from TRL 1.16's source and checked here: `assistant_masks` become -100 labels."""
    ids, masks, _ = prepare_rows(rows[:3], max_length=512)
    trainer = build_trainer(ids, masks, SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path),
                                                  max_steps=1, device="cpu"))
    assert trainer.args.use_cpu and not trainer.args.bf16 and not trainer.args.activation_checkpointing
    prepared = trainer.train_dataset
    assert "assistant_masks" not in prepared.column_names
    for i, m, labels in zip(ids, masks, prepared["labels"], strict=True):
        assert len(labels) == len(i)
        for tok, bit, label in zip(i, m, labels, strict=True):
            assert label == (tok if bit else -100)
    batch = trainer.data_collator([prepared[0], prepared[1]])
    assert ((batch["labels"] != -100).sum(dim=1).tolist()) == [sum(masks[0]), sum(masks[1])]


def test_train_sft_learns_saves_and_tracks(tiny_model_dir, rows, tracker, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "ckpt"), max_steps=30,
                       learning_rate=3e-3, per_device_batch_size=8, max_length=512, seed=0)
    res = train_sft(rows + [{"input_ids": [1, 2], "loss_mask": [0, 0]}], recipe, tracker=tracker,
                    run_tags={"corpus": "test@v1"})
    assert res.steps == 30 and len(res.losses) == 30 and res.skipped_rows == 1 and res.train_rows == 8
    assert all(math.isfinite(v) for v in res.losses + res.grad_norms)
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < 0.7 * first, res.losses
    assert res.final_loss == res.losses[-1] and res.tokens_per_second > 0 and res.train_seconds > 0
    print(f"\nSFT tiny model on CPU: {res.steps_per_second:.1f} steps/s, {res.tokens_per_second:,.0f} tokens/s")

    model = AutoModelForCausalLM.from_pretrained(res.checkpoint_dir)
    tok = AutoTokenizer.from_pretrained(res.checkpoint_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok(["<|assistant|>12.5<|end|>"])["input_ids"] == AutoTokenizer.from_pretrained(tiny_model_dir)(
        ["<|assistant|>12.5<|end|>"])["input_ids"]
    assert tok.chat_template and (res.checkpoint_dir / "tracemill_recipe.json").exists()

    run = tracker.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["corpus"] == "test@v1"
    assert run.data.params["max_steps"] == "30" and run.data.params["base_model"] == str(tiny_model_dir)
    assert run.data.params["train_rows"] == "8"
    device = {k: run.data.params[k] for k in ("device", "device_requested", "bf16", "attn_implementation", "world_size")}
    assert device == {"device": "cpu", "device_requested": "auto", "bf16": "False", "attn_implementation": "sdpa",
                      "world_size": "1"}
    assert res.world_size == 1
    history = tracker.client.get_metric_history(res.mlflow_run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, 31))
    assert {"grad_norm", "learning_rate", "final_loss", "mean_tokens_per_second"} <= set(run.data.metrics)
    # per step: throughput over the logging window and the padding fraction of the batches built
    speed = tracker.client.get_metric_history(res.mlflow_run_id, "tokens_per_second")
    padding = tracker.client.get_metric_history(res.mlflow_run_id, "padding_fraction")
    assert sorted(m.step for m in speed) == sorted(m.step for m in padding) == list(range(1, 31))
    assert all(m.value > 0 for m in speed) and all(0 <= m.value < 1 for m in padding)
    assert run.data.params["git_commit"] == subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                                                           capture_output=True).stdout.strip()
    assert run.data.tags["mlflow.source.git.commit"] == run.data.params["git_commit"]
    artifacts = [a.path for a in tracker.client.list_artifacts(res.mlflow_run_id)]
    assert "tracemill_recipe.json" in artifacts


def test_tracker_default_is_local_sqlite(tmp_path):
    from pipeline.tracking import MlflowTracker

    t = MlflowTracker(home=tmp_path)
    assert t.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow' / 'mlflow.db'}"
    assert t.artifact_root == str(tmp_path.resolve() / "mlflow" / "artifacts")
    assert MlflowTracker("sqlite:////x/y/mlflow.db").artifact_root == "/x/y/artifacts"


def test_tracker_ends_failed_runs(tracker):
    with pytest.raises(RuntimeError), tracker.start_run("boom", params={"a": {"b": 1}}) as run:
        tracker.log_metrics({"x": 1.0, "skipped": "n/a"}, step=2)
        raise RuntimeError("training crashed")
    got = tracker.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.params["a.b"] == "1" and got.data.metrics == {"x": 1.0}
    assert set(got.data.params) == {"a.b", "git_commit", "git_dirty"}  # every run names its code
    tracker.log_metrics_to_run(run.run_id, {"eval_loss": 2.5})
    assert tracker.get_run(run.run_id).data.metrics["eval_loss"] == 2.5
    with pytest.raises(RuntimeError, match="no active run"):
        tracker.log_metrics({"y": 1.0})


def test_same_corpus_and_seed_give_the_same_loss_curve_and_training_resumes(tiny_model_dir, rows, tmp_path):
    """Reproducibility on CPU: the same rows and seed give the same first losses; a saved checkpoint is
    a valid starting point (training continues from where it stopped, not from scratch)."""
    def run(name, base, steps=4):
        recipe = SFTRecipe(base_model=str(base), output_dir=str(tmp_path / name), max_steps=steps,
                           learning_rate=3e-3, per_device_batch_size=4, max_length=512, seed=7, warmup_ratio=0.0)
        return train_sft(rows, recipe)

    a, b = run("a", tiny_model_dir), run("b", tiny_model_dir)
    assert a.losses == pytest.approx(b.losses, rel=1e-5, abs=1e-6)
    resumed = run("c", a.checkpoint_dir)
    assert resumed.losses[0] < a.losses[0]  # starts from the trained weights


def test_training_reports_each_step_to_an_open_progress_bar(tiny_model_dir, rows, tmp_path):
    from pipeline import progress

    seen = []
    token = progress._current.set(lambda done, total, loss: seen.append((done, total, loss)))
    try:
        train_sft(rows, SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "p"), max_steps=3,
                                  per_device_batch_size=4))
    finally:
        progress._current.reset(token)
    assert [(d, t) for d, t, _ in seen] == [(1, 3), (2, 3), (3, 3)] and all(math.isfinite(x) for *_, x in seen)


# ---- device settings: the decision, with the machine's facts injected ----------------------------
def test_device_settings_follow_the_machine():
    from pipeline.train.devices import DeviceFacts, choose_settings

    cpu = choose_settings("auto", DeviceFacts())
    assert (cpu.device, cpu.bf16, cpu.fp16, cpu.attn_implementation, cpu.mixed_precision) == (
        "cpu", False, False, "sdpa", "no")
    assert cpu.training_args()["use_cpu"] and not cpu.training_args()["activation_checkpointing"]
    with pytest.raises(ValueError, match="no CUDA device"):
        choose_settings("cuda", DeviceFacts(flash_attn=True))

    ampere = DeviceFacts(cuda=True, bf16=True, capability=(8, 0), flash_attn=True, gpus=8)
    got = choose_settings("auto", ampere)
    assert (got.device, got.bf16, got.fp16, got.attn_implementation, got.mixed_precision) == (
        "cuda", True, False, "flash_attention_2", "bf16")
    assert got.training_args() == {"use_cpu": False, "bf16": True, "fp16": False, "activation_checkpointing": False,
                                   "ddp_find_unused_parameters": False}
    assert choose_settings("cuda", DeviceFacts(cuda=True, bf16=True, capability=(9, 0))).attn_implementation == "sdpa"
    turing = choose_settings("auto", DeviceFacts(cuda=True, bf16=False, capability=(7, 5), flash_attn=True))
    assert (turing.bf16, turing.fp16, turing.attn_implementation) == (False, True, "sdpa")  # no FA2 before sm80
    assert choose_settings("cpu", ampere).device == "cpu"  # an explicit wish wins over the GPU


def test_precision_setting_bf16_on_a_cpu_with_bf16_instructions(tiny_model_dir, rows, tracker, tmp_path):
    """`train.precision: bf16` autocasts on a CPU that has bf16 instructions (the real-model lane asks for it:
    about 2x for SmolLM2 here), is refused with the field named on one without, and fp32 stays fp32 on a GPU."""
    from pipeline.train.devices import DeviceFacts, choose_settings, machine_facts

    with pytest.raises(ValueError, match="train.precision: bf16 needs a CPU with bfloat16"):
        choose_settings("auto", DeviceFacts(cpu_bf16=False), "bf16")
    fast = choose_settings("auto", DeviceFacts(cpu_bf16=True), "bf16")
    assert (fast.device, fast.bf16, fast.mixed_precision) == ("cpu", True, "bf16")
    assert not choose_settings("auto", DeviceFacts(cpu_bf16=True)).bf16  # auto on a CPU: fp32, as before
    assert not choose_settings("auto", DeviceFacts(cuda=True, bf16=True, capability=(9, 0)), "fp32").bf16
    if not machine_facts().cpu_bf16:
        pytest.skip("this CPU has no bfloat16 instructions: the bf16 training run is checked where it has them")
    res = train_sft(rows, SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "bf16"), max_steps=3,
                                    per_device_batch_size=4, precision="bf16", device="cpu"), tracker=tracker)
    params = tracker.get_run(res.mlflow_run_id).data.params
    assert (params["bf16"], params["device"]) == ("True", "cpu") and all(math.isfinite(x) for x in res.losses)


def test_probe_and_attention_fallback(tiny_model_dir):
    """This machine's facts agree with torch; a kernel the machine lacks falls back to sdpa, and the model
    config (which `trainer_params` logs) says so."""
    import torch

    from pipeline.train.devices import DeviceFacts, DeviceSettings, load_causal_lm

    assert DeviceFacts.probe().cuda == torch.cuda.is_available()
    if torch.cuda.is_available():
        pytest.skip("fallback is checked on a machine without FlashAttention")
    model = load_causal_lm(str(tiny_model_dir), DeviceSettings("cuda", True, False, "flash_attention_2"))
    assert model.config._attn_implementation == "sdpa" and model.dtype == torch.float32


def test_train_sft_streams_a_corpus_slice(tiny_model_dir, rows, tracker, tmp_path):
    """`train_sft_corpus` reads the pinned version with CorpusLoader (no Python rows), trains on the query's
    rows only and counts what it dropped like `prepare_rows` does."""
    import polars as pl

    from pipeline.corpus.store import snapshot

    root = f"file://{tmp_path / 'corpora'}"
    data = rows + [{"input_ids": [1, 2, 3], "loss_mask": [0, 0, 0]}] + rows[:2]  # untrainable, then 2 eval rows
    split = ["train"] * (len(rows) + 1) + ["eval"] * 2
    snapshot(pl.DataFrame({
        "trajectory_id": [f"t{i}" for i in range(len(data))], "split": split,
        "input_ids": pl.Series([list(map(int, r["input_ids"])) for r in data], dtype=pl.List(pl.Int32)),
        "loss_mask": pl.Series([list(map(int, r["loss_mask"])) for r in data], dtype=pl.List(pl.UInt8))}),
        "org/sft", root=root)
    recipe = SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "ckpt"), max_steps=12,
                       learning_rate=3e-3, per_device_batch_size=4, seed=0)
    res = train_sft_corpus("org/sft@v1", recipe, root=root, query="SELECT * WHERE \"split\" = 'train'",
                           tracker=tracker)
    assert (res.train_rows, res.skipped_rows, res.steps, res.world_size) == (8, 1, 12, 1)
    assert all(math.isfinite(v) for v in res.losses) and sum(res.losses[-3:]) < sum(res.losses[:3])
    assert (res.checkpoint_dir / "model.safetensors").exists()
    params = tracker.get_run(res.mlflow_run_id).data.params
    assert params["corpus_ref"] == "org/sft@v1" and params["train_rows"] == "8" and params["device"] == "cpu"
    with pytest.raises(ValueError, match="trainable"):
        train_sft_corpus("org/sft@v1", recipe, root=root, query="SELECT * WHERE trajectory_id = 't8'")


def test_train_sft_streams_rows_of_equal_length(tiny_model_dir, rows, tmp_path):
    """Corpora truncated at snapshot time have many rows exactly max_length long (the demo world at 384)."""
    import polars as pl

    from pipeline.corpus.store import snapshot

    root = f"file://{tmp_path / 'corpora'}"
    cut = min(len(r["input_ids"]) for r in rows)
    snapshot(pl.DataFrame({
        "trajectory_id": [f"t{i}" for i in range(len(rows))],
        "input_ids": pl.Series([list(map(int, r["input_ids"][:cut])) for r in rows], dtype=pl.List(pl.Int32)),
        "loss_mask": pl.Series([[0] * (cut - 4) + [1] * 4 for _ in rows], dtype=pl.List(pl.UInt8))}),
        "org/flat", root=root)
    recipe = SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "ckpt"), max_steps=1,
                       per_device_batch_size=4)
    assert train_sft_corpus("org/flat@v1", recipe, root=root).steps == 1


def test_mlflow_params_record_the_lora_decision_not_the_wish(tiny_model_dir, tmp_path):
    """`lora: auto` is logged as what the run did (no LoRA for a model under 1B parameters) and the wish apart;
    the CLI leaves the choice to `auto` unless --lora/--no-lora is given."""
    from typer.testing import CliRunner

    from pipeline.cli.main import app
    from pipeline.train.recipes import recipe_params

    params = recipe_params(SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "o")))
    assert (params["lora"], params["lora_requested"]) == (False, "auto")
    forced = recipe_params(SFTRecipe(base_model=str(tiny_model_dir), output_dir=str(tmp_path / "o"), lora=True))
    assert (forced["lora"], forced["lora_requested"]) == (True, True)
    help_text = CliRunner().invoke(app, ["train", "sft", "--help"], terminal_width=200).output
    assert "--lora" in help_text and "--no-lora" in help_text and "auto" in help_text


def test_generation_backend_is_vllm_only_on_a_gpu_that_has_it():
    """TRL's colocated vLLM (GRPO) and a vLLM engine (online eval) on a CUDA machine with `vllm` installed;
    HF generate everywhere else, on request (`TRACEMILL_VLLM=0`) and always on a CPU."""
    from pipeline.train.devices import DeviceFacts, generation_backend, machine_facts

    gpu = DeviceFacts(cuda=True, bf16=True, capability=(9, 0), vllm=True, gpus=1)
    assert generation_backend("auto", gpu, env={}) == "vllm"
    assert generation_backend("auto", gpu, env={"TRACEMILL_VLLM": "0"}) == "hf"
    assert generation_backend("cpu", gpu, env={}) == "hf"
    assert generation_backend("auto", DeviceFacts(cuda=True, bf16=True, capability=(9, 0)), env={}) == "hf"
    assert generation_backend("auto", DeviceFacts(vllm=True), env={}) == "hf"
    assert generation_backend("auto", machine_facts()) == ("vllm" if machine_facts().cuda and machine_facts().vllm
                                                           else "hf")
