"""The corpus-spec factory: each spec in tracemill.yaml becomes curated → corpus → checkpoint → eval."""


from pathlib import Path
from typing import Any

import dagster as dg

from assets.resources import MlflowResource, TracemillResource
from assets.versions import room_version
from pipeline.config import CorpusSpec, TracemillConfig
from pipeline.corpus import stages
from pipeline.corpus.heldout import heldout_ids
from pipeline.evaluate import stage as stage_eval
from pipeline.evaluate.render import images_markdown
from pipeline.previews import counts_table, markdown_table
from pipeline.train import stage as stage_train
from pipeline.train.base_model import prepare_base_model


def follows_updates() -> dg.AutomationCondition:
    """`eager()` without "no dependency partition is missing".

    Why: curated_<corpus> reads every joined day partition, and most days since `partitions_start` were
    never materialized (today's is always missing until the nightly ingest), so plain `eager()` waited
    forever and a re-join after late outcomes never reached a corpus. Missing days hold no trajectories;
    an update of any day that does exist is what should re-curate. Still waits while a dependency or
    the asset itself is in progress, and fires once per update (`since_last_handled`)."""
    return dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()).with_label(
        "eager_allow_missing_days")


def built_once() -> dg.AutomationCondition:
    """Build the base model the first time a joined day lands, then never again by itself.

    Why: corpus_<corpus> needs it (eager waits for a missing dependency), and building it on every
    join would only produce new materializations that re-trigger the corpus for nothing."""
    return (follows_updates() & dg.AutomationCondition.missing()).with_label("missing_after_first_join")


def retrain_condition(spec: CorpusSpec) -> dg.AutomationCondition | None:
    """`retrain: on_new_version` trains and evaluates as soon as the corpus (or the checkpoint) updates;
    the default leaves both to the nightly retrain, since a GPU run per late reward is rarely wanted."""
    return follows_updates() if spec.retrain == "on_new_version" else None


def gpu_tags(devices: int = 1) -> dict:
    """Kubernetes op tags: the training pod asks for as many GPUs as the spec trains on (`train.devices`)."""
    return {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": str(devices)}}}}}


def build_model_asset(joined: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.asset(group_name="model", deps=[joined], kinds={"pytorch"}, automation_condition=built_once(),
              code_version=room_version("train"),
              description="The base model: a Hugging Face id/path, or a tiny local Llama whose BPE "
                          "tokenizer is trained on the workspace's own text (built once, then reused).")
    def base_model(tracemill: TracemillResource) -> dg.MaterializeResult:
        info = prepare_base_model(tracemill.open_workspace(), tracemill.base_model, tracemill.models_dir())
        return dg.MaterializeResult(metadata={
            "model": info.model, "built_now": info.built, "parameters": info.parameters,
            "vocab_size": info.vocab_size, "path": dg.MetadataValue.path(info.model),
        })

    return base_model


def build_corpus_assets(spec: CorpusSpec, joined: dg.AssetsDefinition, base_model: dg.AssetsDefinition) -> list:
    name = spec.name

    @dg.asset(name=f"curated_{name}", group_name="curation", deps=[joined], kinds={"polars"},
              code_version=room_version("lake", "corpus"),
              automation_condition=follows_updates(),
              description=f"Joined trajectories filtered by `{spec.filter or 'everything'}`, quality rules, "
                          "PII/secret redaction, de-duplication and a stable train/eval split.")
    def curated(tracemill: TracemillResource) -> dg.MaterializeResult:
        df, st = stages.curate_corpus(tracemill.open_workspace(), spec)
        return dg.MaterializeResult(metadata={
            "dagster/row_count": df.height, "filter": spec.filter, "input_rows": st.input_rows,
            "after_filter": st.after_filter,
            "dropped": dg.MetadataValue.md(counts_table(dict(st.dropped), "rule")),
            "redactions": dg.MetadataValue.md(counts_table(dict(st.redactions), "kind")),
            "splits": dg.MetadataValue.json(dict(st.splits)),
            "preview": dg.MetadataValue.md(markdown_table(df, ["trajectory_id", "agent", "task_id", "reward", "split"])),
        })

    @dg.asset(name=f"corpus_{name}", group_name="corpus", deps=[curated, base_model], kinds={"deeplake"},
              automation_condition=dg.AutomationCondition.eager(), code_version=room_version("chat", "corpus"),
              description=f"Versioned Deeplake snapshot of curated_{name} at {spec.target}: a commit plus a "
                          "tag vN, text, JSON messages, token ids and loss masks.")
    def corpus(tracemill: TracemillResource) -> dg.MaterializeResult:
        info = stages.snapshot_corpus(tracemill.open_workspace(), spec, tracemill.corpus_root_url(),
                                      tracemill.base_model, tracemill.models_dir())
        return dg.MaterializeResult(metadata={
            "dagster/row_count": info.row_count, "version": info.version, "new_version": info.created,
            "mode": info.mode, "appended": info.appended, "parent": info.parent or "",
            "content_hash": info.content_hash, "url": info.url,
            "lineage": dg.MetadataValue.json(info.lineage),
        })

    @dg.asset_check(asset=corpus, blocking=True,
                    description="Corpus is non-empty, every row has trainable tokens, no task is in both splits, "
                                "and no train row belongs to an environment's held-out task.")
    def corpus_is_trainable(tracemill: TracemillResource) -> dg.AssetCheckResult:
        report = stages.check_corpus(spec, tracemill.corpus_root_url(),
                                     heldout_ids(tracemill.open_workspace(), spec))
        return dg.AssetCheckResult(passed=report.passed, metadata=report.as_dict())

    @dg.asset(name=f"checkpoint_{name}", group_name="training", pool="gpu", op_tags=gpu_tags(spec.train.devices),
              deps=[corpus, base_model, *([dg.AssetKey(f"checkpoint_{spec.init_from}")] if spec.init_from else [])],
              kinds={"pytorch", "mlflow"}, automation_condition=retrain_condition(spec),
              code_version=room_version("chat", "corpus", "train"),
              description=f"TRL {spec.format.upper()} fine-tune on corpus_{name}'s latest version"
                          f"{f', starting from checkpoint_{spec.init_from}' if spec.init_from else ''}; "
                          "tracked in MLflow, saved as a Hugging Face model directory.")
    def checkpoint(context: dg.AssetExecutionContext, tracemill: TracemillResource,
                   mlflow: MlflowResource) -> dg.MaterializeResult:
        res = stage_train.train_corpus(spec, tracemill.corpus_root_url(), tracemill.base_model_path(),
                                       tracemill.checkpoints_root(), mlflow.tracker(tracemill.home_path),
                                       tags={"dagster_run_id": context.run.run_id})
        return dg.MaterializeResult(metadata={
            "checkpoint": dg.MetadataValue.path(str(res.checkpoint_dir)),
            "corpus_version": res.corpus_ref, "reused": res.reused, "steps": res.steps,
            "final_loss": res.final_loss, "first_loss": res.first_loss,
            "tokens_per_second": res.tokens_per_second, "train_seconds": res.train_seconds,
            "mlflow_run_id": res.mlflow_run_id or "", "size_mb": res.size_mb,
            "model_uri": res.registration.model_uri or "",  # the registered MLflow model version
            **({"registration_error": e} if (e := res.registration.registration_error) else {}),
            "start_model": res.base_model, "train_rows": res.train_rows,
        })

    @dg.asset(name=f"eval_{name}", group_name="evaluation", deps=[checkpoint, corpus], kinds={"deeplake", "pytorch"},
              automation_condition=retrain_condition(spec), code_version=room_version("train", "evaluate", "demo"),
              description=f"checkpoint_{name} on the eval slice queried from the same Deeplake corpus"
                          + (f", and acting as the agent on held-out tasks of {spec.environment}" if spec.online_on else
                             " (offline only: the spec names no environment)")
                          + "; compared with the base model and the previous checkpoint.")
    def evaluation(tracemill: TracemillResource, mlflow: MlflowResource) -> dg.MaterializeResult:
        tracker = mlflow.tracker(tracemill.home_path)
        rep = stage_eval.evaluate_corpus(spec, tracemill.corpus_root_url(), tracemill.checkpoints_dir(name),
                                         tracemill.base_model_path(), tracemill.open_workspace(), tracker)
        return dg.MaterializeResult(metadata=eval_metadata(rep, tracker))

    @dg.asset_check(asset=evaluation, blocking=True,
                    description=f"Gate: the new checkpoint is not worse than the previous one by more than "
                                f"{spec.gate.margin} on {spec.gate_metric}; only then is it promoted to LATEST.")
    def not_worse_than_previous(tracemill: TracemillResource) -> dg.AssetCheckResult:
        gate = stage_eval.last_gate(tracemill.checkpoints_dir(name))
        return dg.AssetCheckResult(passed=bool(gate.passed), metadata=gate.metadata(), description=gate.message)

    return [curated, corpus, corpus_is_trainable, checkpoint, evaluation, not_worse_than_previous]


def _round(metrics: dict[str, Any]) -> dict[str, Any]:
    """Numbers to 4 places: 0.123456789 in a metadata table is noise a person has to read past."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if isinstance(v, int | float)}


def eval_metadata(rep: stage_eval.EvalResult, tracker: Any) -> dict[str, Any]:
    """The eval asset's metadata, in the order a person reads it: the answer (verdict, gate, headline
    success), then the MLflow run, the report with its plots inlined as images, then the detail."""
    head: dict[str, Any] = {"verdict": str(rep.verdict), "gate_passed": rep.gate.passed, "gate": rep.gate.message}
    if "success_rate" in rep.online:
        head["online_success_rate"] = round(rep.online["success_rate"], 4)
    if rep.mlflow_run_id:
        kind, link = tracker.run_link(rep.mlflow_run_id)
        head["mlflow_run"] = dg.MetadataValue.url(link) if kind == "url" else dg.MetadataValue.path(link)
        if rep.traces:  # the checkpoint's rollouts, in that run's Traces tab
            head["mlflow_traces"] = rep.traces
    report = (rep.report_markdown or "_online eval off_") + "\n\n### Plots\n\n" + images_markdown(rep.plots)
    plots = {f"plot_{Path(p).stem}": dg.MetadataValue.path(p) for p in rep.plots}
    return {**head, "report": dg.MetadataValue.md(report), **_round(rep.offline),
            **_round({f"online_{k}": v for k, v in rep.online.items()}),
            **_round({f"base_online_{k}": v for k, v in rep.base_online.items() if k == "success_rate"}),
            "corpus_version": rep.corpus_ref, "query": rep.query, "checkpoint": dg.MetadataValue.path(rep.checkpoint),
            "slices": dg.MetadataValue.json(rep.slices), **plots}


def build_all(cfg: TracemillConfig, joined: dg.AssetsDefinition) -> list:
    model = build_model_asset(joined)
    out: list = [model]
    for spec in cfg.corpora:
        out.extend(build_corpus_assets(spec, joined, model))
    return out
