"""The evaluation stage: offline metrics on an eval slice of the same Deeplake store, online eval in the
spec's environment (only when it names one), comparison with the base model and the previous checkpoint,
reports, and the promotion gate on an online or an offline metric.

A checkpoint becomes the corpus's `LATEST` only when the gate passes, so a worse model never
silently replaces a better one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.capture.workspace import Workspace
from pipeline.config import LOWER_IS_BETTER, ONLINE_METRICS, CorpusSpec
from pipeline.corpus.heldout import record_heldout
from pipeline.corpus.store import open_corpus, resolve_corpus_url
from pipeline.environment import load_environment
from pipeline.evaluate.compare import Gate, build_report, gate, offline_section
from pipeline.evaluate.offline import evaluate_checkpoint, preference_accuracy
from pipeline.evaluate.online import online_eval
from pipeline.evaluate.plots import plots
from pipeline.evaluate.publish import log_plots, log_report
from pipeline.evaluate.render import markdown_report
from pipeline.evaluate.rollout_traces import log_rollouts
from pipeline.evaluate.verdict import finite
from pipeline.train.checkpoints import finished_checkpoints, promote
from pipeline.train.methods import method_for
from pipeline.train.tracked_run import quiet_progress

GATE_FILE = "gate.json"


@dataclass(frozen=True)
class EvalResult:
    """What evaluating a checkpoint gave: offline metrics (the eval slice and the named slices), online
    summaries of the checkpoint, the base model and the previous checkpoint, the verdict and the gate, the
    markdown report and the plots drawn."""

    checkpoint: str
    corpus_ref: str
    query: str
    offline: dict[str, Any]
    slices: dict[str, dict[str, Any]]
    online: dict[str, Any]
    base_online: dict[str, Any]
    previous_online: dict[str, Any]
    verdict: str | None
    gate: Gate
    report_markdown: str
    plots: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    traces: int = 0  # rollouts readable as MLflow traces on that run


def _read(path: Path) -> dict[str, Any] | None:
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2))


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN means 'not applicable' (e.g. no tool-call turns): drop it from metadata rather than lie."""
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


def _eval_generation(spec: CorpusSpec, checkpoint_dir: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Teacher-forced loss and generation accuracy; prompts look like the training sequences did, and the
    tool schemas still check the generated arguments."""
    return evaluate_checkpoint(checkpoint_dir, rows, max_examples=spec.eval.max_examples,
                               max_new_tokens=spec.eval.max_new_tokens, tools_in_prompt=spec.tools_in_prompt)


def _eval_preference(spec: CorpusSpec, checkpoint_dir: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the checkpoint prefers the chosen completion (KTO rows: the desirable one), on the first
    `eval.max_examples` rows: each costs two forward passes per model scored (checkpoint, previous, base)."""
    return preference_accuracy(checkpoint_dir, rows, tools_in_prompt=spec.tools_in_prompt,
                               max_examples=spec.eval.max_examples)


# What a training method's `offline_eval` names (pipeline.train.methods): how its checkpoints are scored.
OFFLINE_EVALUATIONS: dict[str, Callable[[CorpusSpec, str, list[dict[str, Any]]], dict[str, Any]]] = {
    "generation": _eval_generation, "preference": _eval_preference}


def offline_metrics(spec: CorpusSpec, corpus_url: str, checkpoint_dir: str, query: str | None = None) -> dict[str, Any]:
    """The training method's offline metrics on one slice (a TQL query) of the trained version."""
    with quiet_progress():  # no 'Loading weights' bar per model and slice in the run log
        return _offline_metrics(spec, corpus_url, checkpoint_dir, query)


def _offline_metrics(spec: CorpusSpec, corpus_url: str, checkpoint_dir: str, query: str | None) -> dict[str, Any]:
    rows = open_corpus(corpus_url).query(query or spec.eval.query).rows()
    kind = method_for(spec.format).offline_eval
    if not rows or kind is None:
        return {"n_rows": len(rows)}
    return OFFLINE_EVALUATIONS[kind](spec, checkpoint_dir, rows) | {"n_rows": len(rows)}


def slice_metrics(spec: CorpusSpec, corpus_url: str, checkpoint_dir: str) -> dict[str, dict[str, Any]]:
    """Every named slice of the spec, each with the exact version and query it ran on."""
    out = {}
    for name, query in spec.eval.slices.items():
        out[name] = {"query": query, "version": corpus_url.rsplit("@", 1)[-1],
                     **_clean(offline_metrics(spec, corpus_url, checkpoint_dir, query))}
    return out


def slices_markdown(primary: dict[str, Any], slices: dict[str, dict[str, Any]], query: str) -> str:
    keys = [k for k in ("n_rows", "loss", "perplexity", "tool_name_accuracy", "tool_call_accuracy",
                        "final_answer_accuracy", "preference_accuracy", "logprob_margin") if k in primary]
    rows = [("eval", query, primary)] + [(n, v["query"], v) for n, v in slices.items()]
    head = "| slice | query | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2) + "\n"
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    return "### Offline metrics per slice\n\n" + head + "".join(
        f"| {n} | `{q}` | " + " | ".join(cell(m.get(k)) for k in keys) + " |\n" for n, q, m in rows)


def _online(spec: CorpusSpec, checkpoint_dir: str | None, ws: Workspace | None, tag: str,
            cache: Path) -> dict[str, Any] | None:
    if not spec.online_on or spec.environment is None:
        return None
    cached = _read(cache)
    if cached is not None:
        return cached
    env = load_environment(spec.environment, spec.environment_config)
    agent = f"ckpt:{Path(checkpoint_dir or 'policy').name}@{env.name}"  # a snapshot filter can name it
    rep = online_eval(checkpoint_dir, seed=spec.online.seed, n_tasks=spec.online.n_tasks,
                      max_steps=spec.online.max_steps, max_new_tokens=spec.online.max_new_tokens, workspace=ws,
                      tag=tag, agent=agent, tools_in_prompt=spec.tools_in_prompt, environment=spec.environment,
                      environment_config=spec.environment_config, rewards=spec.rewards,
                      timeout_s=spec.online.timeout_s)
    _write(cache, rep)
    return rep


def capture_workspace(spec: CorpusSpec, source: Workspace | None) -> Workspace | None:
    """Where rollouts are captured: `online.capture_to` (the source workspace only when it names it), else nowhere."""
    name = spec.online.capture_to
    if not name:
        return None
    if source is not None and source.name == name:
        return source
    return Workspace.open(name, home=source.home if source is not None else None,
                          data_root=source.data_root if source is not None else None)


def offline_gate(spec: CorpusSpec, tables: Mapping[str, Any]) -> tuple[bool, str]:
    """The gate on an offline metric of the eval slice: the checkpoint vs the previous model on the same rows."""
    metric = spec.gate_metric
    if metric is None:
        return True, "no gate metric (rl without an environment)"
    previous = (tables.get("previous") or {}).get("eval")
    return gate(tables["checkpoint"]["eval"], previous, metric, spec.gate.margin,
                higher_is_better=metric not in LOWER_IS_BETTER)


def evaluate_corpus(spec: CorpusSpec, corpus_root: str, checkpoints: Path, base_model_path: str,
                    ws: Workspace | None = None, tracker: Any = None) -> EvalResult:
    """Evaluate the newest checkpoint of a corpus; returns metrics, the report and the gate verdict."""
    done = finished_checkpoints(checkpoints)
    if not done:
        raise FileNotFoundError(f"no finished checkpoint under {checkpoints}: materialize checkpoint_{spec.name} first")
    ckpt, prev = done[-1], (done[-2] if len(done) > 1 else None)
    ckpt_dir = Path(ckpt.checkpoint_dir)
    version = ckpt.corpus_ref.rsplit("@", 1)[1]
    url = f"{resolve_corpus_url(spec.target, corpus_root)}@{version}"
    offline = offline_metrics(spec, url, str(ckpt_dir))
    slices = slice_metrics(spec, url, str(ckpt_dir))
    examples = {"checkpoint": pop_examples({"eval": offline, **slices})}
    _write(ckpt_dir / "eval" / "offline.json", offline)
    _write(ckpt_dir / "eval" / "offline_slices.json", slices)

    capture = capture_workspace(spec, ws)
    name = online_report_name(spec)
    current = _online(spec, str(ckpt_dir), capture, f"{spec.name}@{version}", ckpt_dir / "eval" / name)
    base = _online(spec, base_model_path, None, "base", Path(base_model_path) / name) \
        if Path(base_model_path).exists() else None
    previous = previous_online(spec, ckpt, prev)
    if current is not None and ws is not None and spec.environment:  # the source's curation must know them too
        record_heldout(ws, spec.environment, [t["task_id"] for t in current["tasks"]])

    report_md, files, verdict = "", [], None
    prev_dir = previous_model(spec, ckpt, prev)
    offline_tables = {"checkpoint": {"eval": offline, **slices},
                      "base": offline_on_same_rows(spec, url, base_model_path) if Path(base_model_path).exists() else None,
                      "previous": offline_on_same_rows(spec, url, prev_dir) if prev_dir else None}
    examples |= {m: pop_examples(t) for m in ("base", "previous") if (t := offline_tables[m])}
    curve = [(i + 1, v) for i, v in enumerate(ckpt.losses or [])]
    metric = spec.gate_metric or ""
    online_gate = current is not None and (metric in ONLINE_METRICS or metric.startswith("reward/"))
    gate_cur, gate_prev = (current, previous) if online_gate else \
        (offline_tables["checkpoint"]["eval"], (offline_tables.get("previous") or {}).get("eval"))
    if current is None:  # offline numbers are then the whole evaluation: still draw them
        files = plots({"offline": offline_section(offline_tables, examples), "loss_curve": curve}, ckpt_dir / "eval")
        if tracker is not None and ckpt.mlflow_run_id:
            log_plots(tracker, ckpt.mlflow_run_id, files)
        gate_ok, gate_msg = offline_gate(spec, offline_tables)
    else:
        report = build_report(current, base=base, previous=previous, loss_curve=curve, offline=offline_tables,
                              offline_per_example=examples)
        report_md, verdict = markdown_report(report, title=f"eval_{spec.name} — {spec.target}@{version}"), report["verdict"]
        out = ckpt_dir / "eval"
        if tracker is not None and ckpt.mlflow_run_id:
            files = log_report(tracker, ckpt.mlflow_run_id, report, out)
        else:
            files = plots(report, out)
        gate_ok, gate_msg = gate(current, previous, metric, spec.gate.margin,
                                 higher_is_better=metric not in LOWER_IS_BETTER) \
            if online_gate else offline_gate(spec, offline_tables)
    if tracker is not None and ckpt.mlflow_run_id:
        tracker.log_metrics_to_run(ckpt.mlflow_run_id, {f"eval_{k}": v for k, v in _clean(offline).items()
                                                        if isinstance(v, int | float)}, step=ckpt.steps)
    report_md = slices_markdown(_clean(offline), slices, spec.eval.query) + "\n" + report_md
    num = lambda t, k: float(t[k]) if t and finite(t.get(k)) else None  # noqa: E731
    verdict_gate = Gate(gate_ok, gate_msg, metric or None, num(gate_cur, metric), num(gate_prev, metric),
                        spec.gate.margin, first_checkpoint=gate_prev is None)
    _write(ckpt_dir / "eval" / GATE_FILE, verdict_gate.__dict__)
    reg = ckpt.registration
    traced = log_rollouts(tracker, current, ckpt.mlflow_run_id, ckpt.corpus_ref, spec.online.trace_limit, reg.model_id) \
        if tracker is not None and ckpt.mlflow_run_id else None
    if tracker is not None and ckpt.mlflow_run_id and reg.model_version:
        numbers = {f"eval_{k}": v for k, v in {**_clean(offline), **_summary(current)}.items() if finite(v)}
        tracker.describe_model_version(
            ckpt.mlflow_run_id, reg.registered_model, reg.model_version, reg.model_id, numbers,
            f"corpus {ckpt.corpus_ref} (version {version}); verdict: {verdict or 'offline only'}; "
            f"gate {'passed' if gate_ok else 'FAILED'}: {gate_msg}", step=ckpt.steps)
    if gate_ok:
        promote(checkpoints, ckpt_dir)
        if tracker is not None and ckpt.registration.model_version:  # models:/tracemill-<corpus>@champion
            tracker.promote(ckpt.registration.registered_model, ckpt.registration.model_version)
    return EvalResult(
        checkpoint=str(ckpt_dir), corpus_ref=ckpt.corpus_ref, query=spec.eval.query, offline=_clean(offline),
        slices=slices, online=_summary(current), base_online=_summary(base), previous_online=_summary(previous),
        verdict=verdict, gate=verdict_gate, report_markdown=report_md,
        plots=[str(f) for f in files if str(f).endswith(".png")], mlflow_run_id=ckpt.mlflow_run_id,
        traces=len(traced.trace_ids) + traced.skipped if traced else 0)


def online_report_name(spec: CorpusSpec) -> str:
    """The file an online report is cached in, in the model's folder: keyed by everything that changes
    the numbers (seed, tasks, environment and its config, tools in the prompt, turns and their token budget),
    so a base model shared by two specs is measured once per setting and never answers with another's report."""
    key = hashlib.sha1(orjson.dumps([spec.environment, spec.environment_config, spec.tools_in_prompt,
                                     spec.online.max_steps, spec.online.max_new_tokens],
                                    option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
    return f"online-{spec.online.seed}-{spec.online.n_tasks}-{key}.json"


def online_reports(spec: CorpusSpec, checkpoint_dir: str | Path, base_model_path: str | Path
                   ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(checkpoint's, base model's) online reports as the last evaluation wrote them, per task."""
    name = online_report_name(spec)
    return _read(Path(checkpoint_dir) / "eval" / name), _read(Path(base_model_path) / name)


def previous_online(spec: CorpusSpec, ckpt: Mapping[str, Any], prev: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What a new checkpoint must not be worse than: the previous checkpoint of the same corpus, or — for
    the first DPO/RL checkpoint — the checkpoint it started from (e.g. SFT), on the same held-out tasks.
    Checkpoints are `CheckpointInfo`s or their JSON (both map the summary file's keys)."""
    name = online_report_name(spec)
    if prev is not None:
        return _read(Path(prev["checkpoint_dir"]) / "eval" / name)
    if spec.init_from:
        return _read(Path(ckpt["base_model"]) / "eval" / name)
    return None


def pop_examples(tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Take the per-example 0/1 lists out of {slice: metrics} (they feed the bootstrap, not metadata)."""
    return {name: ex for name, m in tables.items() if (ex := m.pop("per_example", None))}


def previous_model(spec: CorpusSpec, ckpt: Mapping[str, Any], prev: Mapping[str, Any] | None) -> str | None:
    """The model a new checkpoint is compared with: the previous checkpoint of the corpus, else the
    checkpoint it started from (init_from), else none."""
    if prev is not None:
        return str(prev["checkpoint_dir"])
    return str(ckpt["base_model"]) if spec.init_from and Path(ckpt["base_model"]).exists() else None


def offline_on_same_rows(spec: CorpusSpec, corpus_url: str, model_dir: str) -> dict[str, Any]:
    """Another model's offline metrics on exactly the rows the checkpoint was measured on (the same
    version and the same queries), so deltas compare models, not data. Cached in the model's folder
    by version + query + settings: the base model is measured once per corpus version, not per run."""
    out: dict[str, Any] = {}
    for name, query in {"eval": spec.eval.query, **spec.eval.slices}.items():
        key = hashlib.sha1(orjson.dumps([corpus_url, query, spec.format, spec.eval.max_examples,
                                         spec.eval.max_new_tokens, spec.tools_in_prompt])).hexdigest()[:12]
        cache = Path(model_dir) / "eval" / f"offline-{key}.json"
        metrics = _read(cache)
        if metrics is None:
            metrics = _clean(offline_metrics(spec, corpus_url, model_dir, query))
            _write(cache, metrics)
        out[name] = metrics if name == "eval" else {"query": query, "version": corpus_url.rsplit("@", 1)[-1], **metrics}
    return out


def _summary(rep: dict[str, Any] | None) -> dict[str, Any]:
    if not rep:
        return {}
    keys = ("success_rate", "mean_reward", "tool_call_error_rate", "mean_steps", "invalid_output_rate", "cut_turn_rate",
            "n_tasks")
    return _clean({k: rep.get(k) for k in (*keys, "errors", *(k for k in rep if k.startswith("reward/")))})


def last_gate(checkpoints: Path) -> Gate:
    """The gate verdict of the newest evaluated checkpoint."""
    done = finished_checkpoints(checkpoints)
    verdict = _read(Path(done[-1].checkpoint_dir) / "eval" / GATE_FILE) if done else None
    return Gate(**verdict) if verdict else Gate(False, "no evaluated checkpoint yet")
