"""bench/train.py runs every trainer it names (its GRPO leg once raised "GRPO needs reward functions" after
rewards became required, so the benchmark printed no JSON at all) and ends with one line of JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_training_bench_measures_every_trainer(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRACEMILL_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train.py"), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("sft", "dpo", "kto", "grpo"):
        assert out[name]["steps"] > 0 and out[name]["tokens_per_s"] > 0, name
    assert set(out["tokens_per_s_vs_sft"]) == {"dpo", "kto", "grpo"}
