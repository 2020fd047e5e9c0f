"""Held-out tasks: the task ids an environment evaluates checkpoints on, which must never be trained on.

Why a record in the workspace: online evaluation can capture its rollouts into a workspace
(`online.capture_to`), and curation splits by a hash of the task id, so without this ~80% of the held-out
tasks' rollouts would land in the *train* split of the next snapshot and the next evaluation would be
measured on tasks the model was trained on. Online evaluation records the ids it ran on in every
workspace it captures into; curation reads them (plus the spec's own environment's held-out tasks) and
sends those trajectories to eval or drops them (`heldout:`), and `corpus_is_trainable` fails if a train
row still belongs to one.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from pipeline import storage
from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec
from pipeline.environment import load_environment

HELDOUT_FILE = "heldout_tasks.json"


def recorded_heldout(ws: Workspace) -> dict[str, list[str]]:
    """{environment: held-out task ids} recorded in the workspace so far."""
    path = ws.root / HELDOUT_FILE
    return orjson.loads(path.read_bytes()) if path.exists() else {}


def record_heldout(ws: Workspace, environment: str, task_ids: Iterable[str]) -> None:
    """Add task ids to the workspace's record (a union: ids once held out stay held out)."""
    path = ws.root / HELDOUT_FILE
    known = recorded_heldout(ws)
    ids = sorted({*known.get(environment, []), *task_ids})
    if ids == known.get(environment):
        return
    storage.write_bytes_atomic(path, orjson.dumps({**known, environment: ids},
                                                  option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))


def heldout_ids(ws: Workspace, spec: CorpusSpec) -> frozenset[str]:
    """Every held-out task id a corpus of this workspace must keep out of train: recorded ones and the
    spec's own environment's evaluation tasks (even before any evaluation ran)."""
    ids = {t for recorded in recorded_heldout(ws).values() for t in recorded}
    if spec.online_on and spec.environment:
        env = load_environment(spec.environment, spec.environment_config)
        ids |= {t.task_id for t in env.eval_tasks(spec.online.seed, spec.online.n_tasks)}
    return frozenset(ids)
