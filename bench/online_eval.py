"""Online-evaluation speed: every held-out episode advanced turn by turn in one batched `generate` (what
`online_eval` does) against the same episodes one at a time (one `generate` per episode and turn, as before).
Same checkpoint, same tasks, same greedy decoding, in one process. Prints a line per run, then one line of JSON.

    .venv/bin/python bench/online_eval.py [--model smollm2-135m|PATH] [--tasks 30] [--unseen-share 0.5]

`--model` defaults to SmolLM2-135M-Instruct when `make smollm2` has prepared it, else a tiny model built here.
A checkpoint trained by `make demo-real` (its `checkpoints/sft/...` folder) is the most telling input: its
episodes run 3-4 turns, as a working agent's do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.demo.environment import make_env  # noqa: E402
from pipeline.evaluate.online import model_policy, online_eval  # noqa: E402


def default_model(tmp: Path) -> str:
    prepared = Path(os.environ.get("TRACEMILL_HOME", ".tracemill")) / "models" / "smollm2-135m"
    if (prepared / "config.json").exists():
        return str(prepared)
    from random import Random

    from pipeline.chat.tracemill import render_text
    from pipeline.demo.agents import ScriptPolicy, careful
    from pipeline.demo.rollout import rollout
    from pipeline.demo.world import TOOLS, eval_tasks
    from pipeline.train.tiny_model import build_tiny_model

    texts = [render_text(rollout(ScriptPolicy(careful(t, Random(0))), t)[0], TOOLS) for t in eval_tasks(99, 40)]
    return str(build_tiny_model(texts, tmp / "tiny", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, seed=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder or prepared model (default: SmolLM2 if prepared, else tiny)")
    ap.add_argument("--tasks", type=int, default=30, help="held-out tasks (episodes)")
    ap.add_argument("--unseen-share", type=float, default=0.5, help="share of tasks about unseen items")
    ap.add_argument("--max-steps", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(Path(tmp))
        env = make_env(args.unseen_share)  # by reference below: a fresh instance per episode, as a spec gives
        common = {"seed": 0, "n_tasks": args.tasks, "max_steps": args.max_steps, "device": "cpu",
                  "environment": "pipeline.demo.environment:make_env", "tools_in_prompt": True,
                  "environment_config": {"unseen_item_share": args.unseen_share}}
        one_by_one = model_policy(model, tools_in_prompt=True, environment=env)  # loads (and caches) the model
        runs = {}
        for name, kwargs in (("batched", {}), ("one_at_a_time", {"policy_factory": lambda task: one_by_one}),
                             ("batched_again", {})):
            t0 = time.perf_counter()
            rep = online_eval(model, **common, **kwargs)
            runs[name] = {"seconds": time.perf_counter() - t0, "success_rate": rep["success_rate"],
                          "mean_steps": rep["mean_steps"], "answers": [t["final_answer"] for t in rep["tasks"]]}
            print(f"{name:<14} {runs[name]['seconds']:7.1f} s  success {rep['success_rate']:.3f}  "
                  f"steps/task {rep['mean_steps']:.2f}", file=sys.stderr)
    batched = min(runs["batched"]["seconds"], runs["batched_again"]["seconds"])
    same = sum(a == b for a, b in zip(runs["batched"]["answers"], runs["one_at_a_time"]["answers"], strict=True))
    out = {"bench": "online_eval", "model": Path(model).name, "tasks": args.tasks, "max_steps": args.max_steps,
           "one_at_a_time_s": round(runs["one_at_a_time"]["seconds"], 2), "batched_s": round(batched, 2),
           "speedup": round(runs["one_at_a_time"]["seconds"] / batched, 2),
           "success_one_at_a_time": runs["one_at_a_time"]["success_rate"],
           "success_batched": runs["batched"]["success_rate"], "mean_steps": runs["batched"]["mean_steps"],
           "same_final_answers": same}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
