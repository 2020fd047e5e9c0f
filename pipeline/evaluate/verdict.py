"""The vocabulary every evaluation view shares: which models a report compares, which direction of
each metric is better, which offline metric carries the verdict, and how a confidence interval
becomes words.

Why a leaf: `compare` builds reports, `render` and `plots` draw them; all three read these few names,
so they live below all three and nothing imports in a circle.
"""

from __future__ import annotations

import math
from typing import Any

MODELS = ("checkpoint", "base", "previous")
# None: no better direction (fewer steps can mean skipping the tools). Unknown metrics: higher is better.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "success_rate": True, "mean_reward": True, "tool_call_error_rate": False, "invalid_output_rate": False,
    "mean_steps": None, "loss": False, "perplexity": False}
# Offline (teacher-forced / replayed) metrics of pipeline/evaluate/offline.py, in display order; the first
# present of OFFLINE_PRIMARY carries the offline verdict (answers matter more to users than loss).
OFFLINE_METRICS = ["loss", "perplexity", "tool_name_accuracy", "tool_call_accuracy", "final_answer_accuracy",
                   "preference_accuracy", "logprob_margin"]
OFFLINE_PRIMARY = ("final_answer_accuracy", "preference_accuracy", "tool_call_accuracy", "logprob_margin", "loss")


def finite(x: Any) -> bool:
    """A real number worth comparing or plotting (not a bool, not NaN or infinite)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def verdict_words(metric: str, lo: float, hi: float) -> str:
    """'better'/'worse' only when the CI of (current − baseline) excludes 0, in the metric's good direction."""
    better = HIGHER_IS_BETTER.get(metric, True)
    if better is None or not (lo > 0 or hi < 0):  # NaN bounds compare False: no claim
        return "no significant difference"
    return "better" if (lo > 0) == better else "worse"
