"""Multi-device training: the parent starts `accelerate launch` in a child process group and reads a result back.

Why a child group and not `accelerate launch tracemill …` around the whole pipeline: the Dagster step, the CLI
and tests call `train_sft` / `train_pref` / `train_grpo` in-process; when `recipe.devices > 1` those hand their
*prepared* rows (plain ints and strings, as JSON, or a corpus stream's settings) to `pipeline.train.worker`, one process per device (DDP), and
return the same `TrainResult` as a single-process run. The parent owns the MLflow run (so a crashed or killed
group still ends it FAILED, and there is one run per training); rank 0 logs into it by run id, saves the
checkpoint and writes the result; every rank writes a short report (`tracemill_launch.json` in the checkpoint).

Why `accelerate launch --multi_gpu` also on CPU: its `--cpu` flag with more than one process goes to the MPI
launcher (it needs `mpirun` and a hostfile; without one it silently starts a *single* process), while the
`--multi_gpu` launcher is torchrun underneath and the Trainer picks gloo when the recipe resolves to CPU
(`use_cpu=True`). A user's `accelerate config` default file still applies to what is not passed here.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from pipeline.progress import report
from pipeline.train.devices import machine_facts, settings_for
from pipeline.train.result import TrainResult

PROGRESS = "@@tracemill-progress "  # worker → parent step reports, not echoed
WORKER_ENV = "TRACEMILL_WORKER"
TAIL_LINES = 40


class LaunchError(RuntimeError):
    """The launched group failed; the message ends with the tail of its output."""


def should_launch(devices: int) -> bool:
    """More than one device asked for, and this process is not already one of a launched group."""
    return devices > 1 and WORKER_ENV not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(devices: int, mixed_precision: str, spec_path: Path, data_path: Path) -> list[str]:
    """The `accelerate launch` command line (with this interpreter, so the same environment)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(devices),
            "--num_machines", "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", "pipeline.train.worker", str(spec_path), str(data_path)]


def tracking_spec(tracker: Any, run_id: str) -> dict[str, Any]:
    """How rank 0 reaches the parent's MLflow run: the tracker's store and the run id."""
    try:
        return {"tracking_uri": tracker.tracking_uri, "experiment": tracker.experiment,
                "artifact_root": tracker.artifact_root, "run_id": run_id}
    except AttributeError:
        raise TypeError(f"a launched training logs through an MlflowTracker (it needs tracking_uri, experiment and "
                        f"artifact_root to reach the run from rank 0), not {type(tracker).__name__}") from None


def _stop(proc: subprocess.Popen) -> None:
    """TERM the whole group (launcher and ranks), KILL what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def stream(cmd: list[str], env: Mapping[str, str], log_path: Path,
           echo: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run `cmd` in its own process group, echo and log its output line by line, forward step reports
    to the open progress bar; returns the exit code and the last lines. Interrupting the parent (Ctrl-C,
    a cancelled Dagster step) stops the group, so no rank outlives it holding a GPU."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    try:
        with open(log_path, "w") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith(PROGRESS):
                    done, total, loss = line[len(PROGRESS):].split()
                    report(int(done), int(total) or None, None if loss == "nan" else float(loss))
                    continue
                tail.append(line.rstrip("\n"))
                echo(line.rstrip("\n"))
        return proc.wait(), list(tail)
    except BaseException:
        _stop(proc)
        raise


def failure_message(what: str, code: int, work: Path, tail: list[str], log: Path) -> str:
    """The first rank's exception (the root cause; later ranks often fail *because* it did) with the end of
    its traceback, or, when no rank left one (killed, out of memory), the last lines of the group's output."""
    errors = sorted(work.glob("error_rank*.txt"), key=lambda p: p.stat().st_mtime)
    if errors:
        lines = errors[0].read_text().rstrip().splitlines()
        detail = f"{errors[0].stem.removeprefix('error_')}: {lines[-1]}\n" + "\n".join(lines[-TAIL_LINES // 2:])
    else:
        detail = "last lines of its output:\n" + "\n".join(tail)
    return f"{what} failed (exit {code}; full log: {log}); {detail}"


def _echo_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def launch(kind: str, payload: Mapping[str, Any], recipe: Any, tracker: Any = None,
           run_tags: Mapping[str, str] | None = None, echo: Callable[[str], None] = _echo_stderr) -> Any:
    """Train `payload` (prepared rows, or a corpus stream's settings) with `recipe.devices` processes, each
    running the `kind` training method's `fit_launched`; returns rank 0's `TrainResult`.
    Child output goes to `echo` (stderr: stdout stays the caller's, e.g. `--json`)."""
    devices, settings = recipe.devices, settings_for(recipe.device, recipe.precision)
    if settings.device == "cuda" and machine_facts().gpus < devices:
        raise ValueError(f"devices={devices} but only {machine_facts().gpus} CUDA device(s) are visible")
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tags = {"trainer": kind, "launcher": "accelerate", "devices": str(devices), **dict(run_tags or {})}
    run_ctx = (tracker.start_run(recipe.run_name or f"{kind}-{out.name}", tags=tags)
               if tracker is not None else contextlib.nullcontext(None))
    with tempfile.TemporaryDirectory(prefix="tracemill-launch-") as tmp, run_ctx as run:
        work = Path(tmp)
        spec = {"kind": kind, "recipe": recipe.model_dump(), "run_tags": dict(run_tags or {}),
                "tracking": tracking_spec(tracker, run.run_id) if run is not None else None,
                "result_path": str(work / "result.json"), "ranks_dir": str(work)}
        (work / "spec.json").write_bytes(orjson.dumps(spec))
        (work / "data.json").write_bytes(orjson.dumps(payload))
        cmd = command(devices, settings.mixed_precision, work / "spec.json", work / "data.json")
        root = str(Path(__file__).resolve().parents[2])  # the folder holding `pipeline/`: the worker imports this tree
        env = {**os.environ, WORKER_ENV: "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        start = time.perf_counter()
        code, tail = stream(cmd, env, work / "worker.log", echo)
        if code != 0 or not (work / "result.json").exists():
            shutil.copy(work / "worker.log", out / "tracemill_launch.log")
            raise LaunchError(failure_message(f"{kind} training with {devices} processes", code, work, tail,
                                              out / "tracemill_launch.log"))
        ranks = [orjson.loads(p.read_bytes()) for p in sorted(work.glob("rank*.json"))]
        if len(ranks) != devices:
            raise LaunchError(f"{len(ranks)} of {devices} ranks reported; last lines:\n" + "\n".join(tail))
        info = {"command": cmd[1:], "world_size": devices, "wall_seconds": round(time.perf_counter() - start, 2),
                "ranks": ranks}
        (out / "tracemill_launch.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        if run is not None:
            tracker.log_artifact(out / "tracemill_launch.json", run_id=run.run_id)
        raw = orjson.loads((work / "result.json").read_bytes())
        names = {f.name for f in fields(TrainResult)}
        return TrainResult(**{k: v for k, v in raw.items() if k in names} | {"checkpoint_dir": Path(raw["checkpoint_dir"])})
