"""Training-throughput benchmark: SFT, DPO, KTO and GRPO with TRL on demo-world data, on the tiny model or a
real one in its own chat template (`--model smollm2-135m` after `make smollm2`, or any HF id / path).
Prints a table, then one line of JSON with every figure.

    .venv/bin/python bench/train.py [--quick] [--device cpu|cuda|auto] [--model smollm2-135m] [--precision bf16]

On a GPU it also reports model FLOPs utilisation: 6 × parameters × tokens/s (forward + backward of a dense
decoder, attention left out) over the device's peak dense bf16 FLOP/s (a table of common cards, or
`TRACEMILL_PEAK_TFLOPS`). On a CPU it reports the achieved GFLOP/s by the same count.

Data: `pipeline.demo.agents.populate` fills a temporary workspace; rows are built straight from the landed
trajectories (no lake/corpus round trip). SFT learns from reward-1 attempts; DPO pairs a reward-1 and a
reward-0 attempt at the same task; KTO labels every attempt by its reward; GRPO gets one prompt per task.
DPO/KTO/GRPO start from the SFT checkpoint, as they would in the pipeline.

"tokens" is what each trainer reports as `num_tokens`, i.e. non-pad tokens through the policy forward:
SFT sequences; DPO chosen + rejected sequences (prompt counted twice); KTO the labelled sequences (its KL
sequences are extra forwards, not counted); GRPO prompt + generated tokens (generation dominates its time).
`train_seconds` is the trainer's loop; `wall_seconds` adds model loading and dataset preparation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.capture.landing import read_landed  # noqa: E402
from pipeline.capture.workspace import Workspace  # noqa: E402
from pipeline.chat import tokenize_conversation  # noqa: E402
from pipeline.chat.tracemill import render_text  # noqa: E402
from pipeline.demo.agents import populate  # noqa: E402
from pipeline.train.tiny_model import build_tiny_model  # noqa: E402


def demo_trajectories(home: Path, per_day: int) -> list[dict[str, Any]]:
    """Landed demo trajectories (valid ones only) with their reward."""
    ws = Workspace.create("bench", home=home)
    try:
        stats = populate(ws, days=["2026-11-16", "2026-11-17"], per_day=per_day, seed=0)
    finally:
        ws.close()
    out = []
    for line in read_landed(ws.landing, "trajectory"):
        rec = line.record
        if rec and rec.get("trajectory_id") in stats.rewards and (rec.get("metadata") or {}).get("task"):
            out.append({**rec, "reward": stats.rewards[rec["trajectory_id"]]})
    return out


def build_rows(trajs: list[dict[str, Any]], tokenizer: Any) -> dict[str, list[dict[str, Any]]]:
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in trajs:
        by_task[t["task_id"]].append(t)
    rows: dict[str, list[dict[str, Any]]] = {"sft": [], "dpo": [], "kto": [], "rl": []}
    for attempts in by_task.values():
        good = [t for t in attempts if t["reward"] >= 1]
        bad = [t for t in attempts if t["reward"] < 1]
        first = attempts[0]
        prompt, tools = json.dumps(first["messages"][:2]), json.dumps(first["tools"])
        for t in good:
            ids, mask = tokenize_conversation(tokenizer, t["messages"], t["tools"])
            rows["sft"].append({"input_ids": ids, "loss_mask": mask})
        for g, b in zip(good, bad, strict=False):
            rows["dpo"].append({"prompt": prompt, "chosen": json.dumps(g["messages"][2:]),
                                "rejected": json.dumps(b["messages"][2:]), "tools": tools})
        for t in attempts:
            rows["kto"].append({"prompt": prompt, "completion": json.dumps(t["messages"][2:]),
                                "label": t["reward"] >= 1, "tools": tools})
        rows["rl"].append({"prompt": prompt, "task_id": first["task_id"], "tools": tools,
                           "ground_truth": json.dumps(first["metadata"]["task"])})
    return rows


GRPO_REWARDS = ["pipeline.demo.rewards:tool_call_reward", "pipeline.demo.rewards:format_reward"]
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
                    "RTX 4090": 165.0, "V100": 125.0, "T4": 65.0}  # dense, tensor cores (vendor data sheets)


def peak_flops(device: str) -> float | None:
    """The device's peak dense bf16 FLOP/s, or None (CPU, unknown card without TRACEMILL_PEAK_TFLOPS)."""
    if os.environ.get("TRACEMILL_PEAK_TFLOPS"):
        return float(os.environ["TRACEMILL_PEAK_TFLOPS"]) * 1e12
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((t * 1e12 for card, t in PEAK_BF16_TFLOPS.items() if card in name), None)


def figures(res: Any, wall: float, parameters: int, peak: float | None) -> dict[str, float | None]:
    flops = 6.0 * parameters * res.tokens_per_second  # GRPO's tokens include generated ones: an upper bound
    return {"steps": res.steps, "steps_per_s": res.steps_per_second, "tokens": res.tokens,
            "tokens_per_s": res.tokens_per_second, "train_seconds": res.train_seconds, "wall_seconds": wall,
            "final_loss": res.final_loss, "rows": res.train_rows, "model_gflops_per_s": flops / 1e9,
            "mfu": flops / peak if peak else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few steps each (smoke test)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--batch", type=int, default=8, help="sequences (DPO: pairs; GRPO: completions) per step")
    ap.add_argument("--model", default="tiny", help="tiny (built here), smollm2-135m (after `make smollm2`), "
                    "or an HF id / path; a real model gets the tools in its prompt")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="train.precision")
    ap.add_argument("--max-length", type=int, default=768, help="tokens kept per sequence")
    ap.add_argument("--only", nargs="+", default=["dpo", "kto", "grpo"], choices=["dpo", "kto", "grpo"],
                    help="trainers measured besides SFT (the baseline, and their starting checkpoint)")
    args = ap.parse_args()
    real = args.model != "tiny"
    steps = ({"sft": 5, "dpo": 3, "kto": 3, "grpo": 2} if args.quick
             else {"sft": 8, "dpo": 4, "kto": 4, "grpo": 3} if real and args.device == "cpu"
             else {"sft": 60, "dpo": 20, "kto": 20, "grpo": 10})

    import torch
    from transformers import AutoTokenizer

    from pipeline.train.grpo import train_grpo
    from pipeline.train.preference import train_dpo, train_kto
    from pipeline.train.recipes import PrefRecipe, RLRecipe, SFTRecipe
    from pipeline.train.sft import train_sft

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trajs = demo_trajectories(root / "home", per_day=60)
        if real:
            from pipeline.models import require_prepared

            model_dir = Path(require_prepared(args.model, Path(os.environ.get("TRACEMILL_HOME", ".tracemill")) / "models"))
        else:
            model_dir = build_tiny_model([render_text(t["messages"], t["tools"]) for t in trajs], root / "tiny",
                                         vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, seed=0)
        rows = build_rows(trajs, AutoTokenizer.from_pretrained(model_dir))
        common = {"device": args.device, "per_device_batch_size": args.batch, "seed": 0, "precision": args.precision}
        from pipeline.models import parameter_count

        parameters, peak = parameter_count(str(model_dir)), peak_flops(args.device)
        runs: dict[str, tuple[Any, Any]] = {
            "sft": (train_sft, SFTRecipe(base_model=str(model_dir), output_dir=str(root / "sft"),
                                         max_steps=steps["sft"], max_length=args.max_length, **common)),
        }
        base = str(root / "sft")  # the others start from the SFT checkpoint
        runs["dpo"] = (train_dpo, PrefRecipe(base_model=base, output_dir=str(root / "dpo"), trainer="dpo",
                                             max_steps=steps["dpo"], learning_rate=1e-3, **common))  # earlier default: comparable figures
        runs["kto"] = (train_kto, PrefRecipe(base_model=base, output_dir=str(root / "kto"), trainer="kto",
                                             max_steps=steps["kto"], learning_rate=1e-3, **common))
        runs["grpo"] = (train_grpo, RLRecipe(base_model=base, output_dir=str(root / "grpo"),  # rewards only: no
                                             max_steps=steps["grpo"], learning_rate=1e-4,  # episode continuation
                                             rewards=GRPO_REWARDS, **common))
        runs = {k: v for k, v in runs.items() if k == "sft" or k in args.only}  # the others start from SFT
        out: dict[str, Any] = {"bench": "train", "device": args.device, "torch_threads": torch.get_num_threads(),
                               "model": args.model, "parameters": parameters, "precision": args.precision,
                               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                               "trajectories": len(trajs), **{f"{k}_rows": len(v) for k, v in rows.items()}}
        for name, (train, recipe) in runs.items():
            t0 = time.perf_counter()
            res = train(rows["rl" if name == "grpo" else name], recipe)
            out[name] = figures(res, time.perf_counter() - t0, parameters, peak)
            print(f"{name:<5} {res.steps:>3} steps  {res.steps_per_second:6.2f} steps/s  "
                  f"{res.tokens_per_second:9,.0f} tokens/s  loss {res.final_loss:.4f}", file=sys.stderr)
    sft_tps = out["sft"]["tokens_per_s"] or 1.0
    measured = [k for k in ("dpo", "kto", "grpo") if k in out]
    out["tokens_per_s_vs_sft"] = {k: out[k]["tokens_per_s"] / sft_tps for k in measured}
    out["steps_per_s_vs_sft"] = {k: out[k]["steps_per_s"] / (out["sft"]["steps_per_s"] or 1.0) for k in measured}
    out["total_seconds"] = time.perf_counter() - started

    def rounded(v: Any) -> Any:
        return {k: rounded(x) for k, x in v.items()} if isinstance(v, dict) else round(v, 3) if isinstance(v, float) else v

    print(json.dumps(rounded(out)))


if __name__ == "__main__":
    main()
