"""One rank of a launched training: `python -m pipeline.train.worker <spec.json> <data.json>` under
`accelerate launch` (see `pipeline.train.launch`, which writes both files and reads the results back).

Every rank runs its training method's `fit_launched` (`pipeline.train.methods`): the same `fit_*` function as a
single-process run, on the same prepared rows (the Trainer's distributed sampler gives each rank its share). Rank 0 logs into the MLflow run the parent opened
(`AttachedTracker`: no second run, and the parent ends it whatever happens here), reports steps to the
parent's progress bar through its output, and writes the result; every rank writes a short report
(device, steps, a checksum of its weights: equal on all ranks when DDP kept them in sync).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from pipeline import progress
from pipeline.tracking import MlflowTracker, TrackedRun
from pipeline.train.devices import is_main_process, rank
from pipeline.train.launch import PROGRESS
from pipeline.train.methods import method_named


class AttachedTracker:
    """An `MlflowTracker` bound to a run someone else created: `start_run` logs params and tags to it and
    yields it, but neither creates nor ends a run. Everything else is the tracker's."""

    def __init__(self, tracker: Any, run_id: str) -> None:
        self.inner, self.run_id = tracker, run_id

    @contextlib.contextmanager
    def start_run(self, name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None) -> Iterator[Any]:
        if params:
            self.inner.log_params(params, run_id=self.run_id)
        if tags:
            self.inner.set_tags(tags, run_id=self.run_id)
        yield TrackedRun(self.run_id, self.inner.experiment_id, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _rank_report(ranks_dir: Path) -> Any:
    from transformers import TrainerCallback

    class RankReport(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            checksum = float(sum(p.detach().double().sum() for p in model.parameters())) if model else None
            report = {"rank": args.process_index, "world_size": args.world_size, "device": str(args.device),
                      "steps": state.global_step, "param_checksum": checksum}
            (ranks_dir / f"rank{args.process_index}.json").write_bytes(orjson.dumps(report))

    return RankReport()


def main(argv: list[str]) -> None:
    """Train; a failure also leaves `error_rank<r>.txt` (its traceback) for the parent's error message, since
    torchrun's own summary names the failed rank but not the exception."""
    spec = orjson.loads(Path(argv[0]).read_bytes())
    try:
        _main(spec, argv)
    except BaseException:
        (Path(spec["ranks_dir"]) / f"error_rank{rank()}.txt").write_text(traceback.format_exc())
        raise


def _main(spec: dict[str, Any], argv: list[str]) -> None:
    payload = orjson.loads(Path(argv[1]).read_bytes())
    tracker, to_parent = None, None
    if is_main_process():
        def to_parent(done: int, total: int | None, loss: float | None) -> None:  # the parent's bar reads these
            print(f"{PROGRESS}{done} {total or 0} {'nan' if loss is None else loss}", flush=True)

        if (t := spec["tracking"]) is not None:
            tracker = AttachedTracker(MlflowTracker(t["tracking_uri"], t["experiment"], t["artifact_root"]),
                                      t["run_id"])
    method = method_named(spec["kind"])
    with progress.reporting_to(to_parent):
        result = method.fit_launched(payload, method.recipe.model_validate(spec["recipe"]), tracker,
                                     spec["run_tags"], [_rank_report(Path(spec["ranks_dir"]))])
    if is_main_process():
        data = dataclasses.asdict(result) | {"checkpoint_dir": str(result.checkpoint_dir)}
        Path(spec["result_path"]).write_bytes(orjson.dumps(data))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
