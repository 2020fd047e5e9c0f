"""The checkpoint's online-eval rollouts as MLflow traces on the run that trained it.

A success rate says how often; the rollouts say why. Each held-out task the checkpoint acted on becomes
one trace (its turns and tool calls as spans, the environment's reward and success as assessments, the
task with its expected answer as an expectation),
linked to the training run (`mlflow.sourceRun`: the run page's Traces tab) and to the registered
version's logged model (`mlflow.modelId`), tagged with the checkpoint, corpus, task and environment so
`tag.task_id = '…'` or `tag.corpus = '…'` finds them. The messages are the online report's, redacted
like the rest of it. Capped (`online.trace_limit`), and skipped when already logged for that run, so
re-materializing an eval costs a few lookups, not a second copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.traces import Published, Score, TrajectoryTrace, log_traces


def rollout_traces(report: Mapping[str, Any], corpus: str, limit: int) -> list[TrajectoryTrace]:
    """The first `limit` rollouts of an online report (`pipeline.evaluate.online.online_eval`) as traces."""
    checkpoint = report.get("checkpoint") or report.get("agent") or "policy"
    common = {"checkpoint": Path(str(checkpoint)).name, "corpus": corpus, "environment": str(report.get("environment")),
              "eval_tag": str(report.get("eval_tag")), "agent": str(report.get("agent")), "tracemill.kind": "online_eval"}
    out = []
    for r in list(report.get("tasks") or [])[:limit]:
        scores = [Score("reward", float(r["reward"])), Score("success", bool(r["success"]))]
        errors = "; ".join(r.get("reward_errors") or []) or None
        scores += [Score(f"reward/{name}", float(v), rationale=errors) for name, v in (r.get("rewards") or {}).items()
                   if v is not None]
        out.append(TrajectoryTrace(
            key=str(r.get("trajectory_id") or r["task_id"]), name=f"rollout {r['task_id']}",
            messages=r.get("messages") or [], scores=scores, tags={**common, "task_id": str(r["task_id"])},
            metadata={"checkpoint_dir": str(checkpoint), "eval_seed": str(report.get("seed")),
                      "eval_index": str(r.get("index")), "steps": str(r.get("steps")),
                      "tool_calls": str(r.get("tool_calls")), "tool_errors": str(r.get("tool_errors"))},
            expectations={"task": r["task"]} if r.get("task") else {}, outputs=r.get("final_answer"),
            seconds=r.get("seconds"),
            error=r.get("error")))
    return out


def log_rollouts(tracker: Any, report: Mapping[str, Any] | None, run_id: str, corpus: str, limit: int,
                 model_id: str | None = None) -> Published:
    """Log the rollouts to `run_id`; nothing when there is no online report or the limit is 0."""
    if not report or limit <= 0:
        return Published([], 0)
    return log_traces(tracker, rollout_traces(report, corpus, limit), run_id=run_id, model_id=model_id)
