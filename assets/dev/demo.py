"""`make demo`: agents act in the demo world, then the whole asset graph is materialized for real.

The story it tells: trajectories land over three days with 30% of their rewards held back; the
graph runs and snapshots corpus v1; the late rewards arrive, the affected day partitions are
re-materialized (what the late-outcome sensor does in production) and the corpus gets v2; then the
tiny model is fine-tuned on v2 and evaluated on its eval slice. Run it twice: same data, same version.

The same story runs the examples (issue 14): `--config` picks another tracemill.yaml and `--populate`
another scripted-traffic function (`module:function`, called as `populate(ws, days=, per_day=, seed=)`,
returning stats with `trajectories_per_agent` and, optionally, held-back `late_outcomes`), e.g.
`python -m assets.dev.demo --config examples/support/tracemill.yaml --populate examples.support.agents:populate`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from assets.dev.demo_progress import stage_lines
from assets.instance import dagster_home_for, ensure_dagster_home

DEMO_DAYS = ["2026-11-16", "2026-11-17", "2026-11-18"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the summary tells the story
console = Console()


def _prepare_env() -> Path:
    home = Path(os.environ.setdefault("TRACEMILL_HOME", str(Path(".tracemill").resolve()))).resolve()
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(dagster_home_for(home)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return home


DEMO_POPULATE = "pipeline.demo.agents:populate"


def _load(ref: str):
    """`module:function` → the function (the populate hook)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_demo(per_day: int = 300, seed: int = 0, train_steps: int | None = None, config: str | None = None,
             populate: str = DEMO_POPULATE) -> dict:
    t0 = time.time()
    if config:  # every later load_config() (assets, sensors) must read the same file
        os.environ["TRACEMILL_CONFIG"] = str(Path(config).resolve())
    warnings.filterwarnings("ignore", module=r"dagster(\..*)?$")  # beta/preview notices, not news for a demo
    home = _prepare_env()
    import dagster as dg

    from assets.definitions import build_definitions
    from pipeline.capture.workspace import Workspace
    from pipeline.config import load_config
    from pipeline.demo.agents import items_named
    from pipeline.lake.ingest import workspace_counts

    cfg = load_config()
    if train_steps is not None:
        for spec in cfg.corpora:
            spec.train.max_steps = train_steps
    _precision_this_machine_has(cfg)
    defs = build_definitions(cfg)
    instance = dg.DagsterInstance.get()
    ws = Workspace.open(cfg.workspace)

    console.rule(f"[bold]1. agents act in the {cfg.workspace} world")
    stats = _load(populate)(ws, days=DEMO_DAYS, per_day=per_day, seed=seed)
    console.print(f"captured {sum(stats.trajectories_per_agent.values())} trajectories "
                  f"({len(stats.late_outcomes)} rewards held back as late)")
    named = items_named(ws)  # before any evaluation captures rollouts: what training can have seen

    def run(job: str, partition_key: str | None = None) -> dg.ExecuteInProcessResult:
        with stage_lines(instance, console) as run_id:  # a line per step and training/eval progress
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition_key,
                                                                   run_config=QUIET, run_id=run_id)
        if not result.success:
            raise SystemExit(f"job {job} failed")
        return result

    console.rule("[bold]2. ingest, join, curate, snapshot")
    for day in DEMO_DAYS:
        run("ingest_daily", day)
    first = run("corpus_refresh")

    delivered, second = 0, first
    if getattr(stats, "late_outcomes", None):
        console.rule("[bold]3. late rewards arrive → affected partitions re-materialized")
        delivered = ws.write_outcomes(stats.late_outcomes)
        stats.late_outcomes = []
        for day in DEMO_DAYS:
            run("ingest_daily", day)
        second = run("corpus_refresh")

    console.rule(f"[bold]{4 if delivered else 3}. fine-tune and evaluate")
    trained = run("train_and_eval")

    names = [c.name for c in cfg.corpora]
    summary = {
        "workspace": ws.name, "counts": workspace_counts(ws), "late_delivered": delivered,
        "corpus_first": {n: _meta(first, f"corpus_{n}") for n in names},
        "corpora": {n: _meta(second, f"corpus_{n}") for n in names},
        "checkpoints": {n: _meta(trained, f"checkpoint_{n}") for n in names},
        "evals": {n: _meta(trained, f"eval_{n}") for n in names},
        "wall_seconds": round(time.time() - t0, 1), "home": str(home),
    }
    summary["headline"] = write_headline(cfg, home, summary, named)
    _print_summary(summary)
    return summary


def write_headline(cfg, home: Path, summary: dict, named: set[str]) -> dict:
    """`demo-summary.json` in the home: per corpus, the base model's and the checkpoint's online success on the
    same held-out tasks, on the tasks about items no captured trajectory names (`named`: so the tiny demo,
    whose traffic names every item, has none), and the paired bootstrap interval of the difference
    (`pipeline.evaluate.headline`)."""
    from pipeline.evaluate.headline import headline
    from pipeline.evaluate.stage import online_reports
    from pipeline.jsonio import dumps_json
    from pipeline.models import resolve_model

    base_path = resolve_model(cfg.base_model, home / "models")
    corpora = {}
    for spec in cfg.corpora:
        ckpt = str(summary["evals"][spec.name].get("checkpoint") or "")
        current, base = online_reports(spec, ckpt, base_path) if ckpt else (None, None)
        if current is None:
            continue  # offline-only spec: no online headline
        corpora[spec.name] = headline(Path(ckpt).name, current, base,
                                      novel=lambda task: bool(task.get("item")) and task["item"] not in named).to_dict()
    out = {"model": cfg.base_model, "corpora": corpora, "wall_seconds": summary["wall_seconds"]}
    (home / "demo-summary.json").write_text(dumps_json(out, indent=2) + "\n")
    return out


def _precision_this_machine_has(cfg) -> None:
    """The real-model lane asks for bf16 (twice as fast on a CPU with bf16 instructions); a machine without
    them (or a GPU, where `auto` already picks it) trains that lane in its automatic precision instead."""
    from pipeline.train.devices import machine_facts

    facts = machine_facts()
    for spec in cfg.corpora:
        if spec.train.precision == "bf16" and not facts.cpu_bf16 and not facts.cuda:
            console.print(f"[yellow]{spec.name}: this CPU has no bfloat16 instructions: training in fp32 (slower)")
            spec.train.precision = "auto"


def _meta(result, asset: str) -> dict:
    import dagster as dg

    for ev in result.get_asset_materialization_events():
        if ev.asset_key == dg.AssetKey(asset):
            md = ev.materialization.metadata
            return {k: getattr(v, "value", v) for k, v in md.items()}
    return {}


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _print_summary(s: dict) -> None:
    c = s["counts"]
    t = Table(title=f"tracemill demo ({s['workspace']})", show_header=False, title_style="bold")
    t.add_row("trajectories captured", f"{c['trajectories']} ({c['messages']} messages, {c['tool_calls']} tool calls)")
    t.add_row("outcomes", f"{c['outcomes']} ({s['late_delivered']} arrived late)")
    t.add_row("quarantined records", str(c["quarantined"]))
    console.print(t)
    for name, v2 in s["corpora"].items():
        v1, ck, ev = s["corpus_first"][name], s["checkpoints"][name], s["evals"][name]
        t = Table(title=f"corpus_{name} → checkpoint_{name} → eval_{name}", show_header=False, title_style="bold")
        same = v1.get("version") == v2.get("version")
        t.add_row("corpus version", f"{v2.get('version')} ({v2.get('dagster/row_count')} rows)"
                  + ("" if same else f", after {v1.get('version')} ({v1.get('dagster/row_count')} rows) before late rewards"))
        t.add_row("training", f"{ck.get('steps')} steps from {Path(str(ck.get('start_model'))).name}, loss "
                  f"{_fmt(ck.get('first_loss'))} → {_fmt(ck.get('final_loss'))}" + (" (reused)" if ck.get("reused") else ""))
        t.add_row("MLflow run / model", f"{ck.get('mlflow_run_id')} / {ck.get('model_uri') or '–'}")
        for k in ("loss", "tool_call_accuracy", "final_answer_accuracy", "preference_accuracy"):
            if k in ev:
                t.add_row(f"offline {k}", _fmt(ev[k]))
        t.add_row("online success (held-out tasks)",
                  f"{_fmt(ev.get('online_success_rate'))} vs base model {_fmt(ev.get('base_online_success_rate'))}")
        if (h := s["headline"]["corpora"].get(name)) and h["n_unseen_item_tasks"]:
            t.add_row("… on unseen-item tasks", f"{_fmt(h['success_unseen'])} of {h['n_unseen_item_tasks']} vs base model "
                      f"{_fmt(h['base_success_unseen'])}; Δ success 95% CI {h['ci95']}")
        t.add_row("verdict / gate", f"{ev.get('verdict')} / {'passed' if ev.get('gate_passed') else 'FAILED'}")
        console.print(t)
    first = next(iter(s["corpora"].values()), {})
    console.print(f"corpora under {first.get('url', '')}  ·  wall time {s['wall_seconds']} s  ·  "
                  f"headline in {Path(s['home']) / 'demo-summary.json'}")
    console.print("Look closer:  [bold]make ui[/] (Dagster, http://127.0.0.1:3000)   "
                  "[bold]make mlflow-ui[/] (MLflow, http://127.0.0.1:5000)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a tracemill.yaml (default: $TRACEMILL_CONFIG or ./tracemill.yaml)")
    ap.add_argument("--populate", default=DEMO_POPULATE, help="module:function writing the scripted traffic")
    ap.add_argument("--per-day", type=int, default=300, help="trajectories captured per day (3 days)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-steps", type=int, help="override every corpus's train.max_steps")
    a = ap.parse_args(argv)
    return run_demo(a.per_day, a.seed, a.train_steps, a.config, a.populate)


if __name__ == "__main__":
    main()
