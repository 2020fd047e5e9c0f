"""Planted PII and secrets in captured trajectories never reach a snapshot — in any format."""

from datetime import UTC, datetime

import orjson
import pytest

from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec
from pipeline.corpus import stages
from pipeline.corpus.store import open_corpus
from pipeline.lake import stages as lake_stages

PLANTED = {
    "email": "jane.doe@example.com",
    "openai_key": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
    "card": "4111 1111 1111 1111",
    "phone": "+1 415-555-0134",
    "ip": "203.0.113.77",
}


def _record(ws, i, reward):
    t0 = datetime(2026, 11, 20, 10, i, tzinfo=UTC)
    with ws.trajectory("planner", trajectory_id=f"p{i}", task_id=f"task{i // 2}", started_at=t0) as run:
        run.system("You are a helpful agent.")
        run.user(f"I'm {PLANTED['email']}, card {PLANTED['card']}, call {PLANTED['phone']}. Task {i // 2}.")
        call = run.tool_call("lookup", {"key": PLANTED["openai_key"], "host": PLANTED["ip"]})
        run.tool_result(call, f"aws={PLANTED['aws_key']} gh={PLANTED['github_token']}")
        run.assistant(f"Done, I used {PLANTED['github_token']} for attempt {i}.")
    ws.record_outcome(f"p{i}", "reward", reward)


@pytest.mark.parametrize("fmt", ["sft", "dpo", "kto", "rl"])
def test_no_planted_secret_reaches_the_snapshot(tmp_path, tiny_model_dir, fmt):
    ws = Workspace.open("pii", home=tmp_path)
    for i in range(8):
        _record(ws, i, 1.0 if i % 2 == 0 else 0.0)
    lake_stages.refresh_lake(ws)
    spec = CorpusSpec(name=fmt, format=fmt, target=f"deeplake://t/{fmt}", eval_fraction=0.0)
    rows, stats = stages.curate_corpus(ws, spec)
    assert rows.height > 0 and sum(stats.redactions.values()) > 0
    root = f"file://{tmp_path / 'corpora'}"
    info = stages.snapshot_corpus(ws, spec, root, str(tiny_model_dir), tmp_path / "models")
    df = open_corpus(info.url).to_polars()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    blob = orjson.dumps(df.drop([c for c in df.columns if c.endswith(("_ids", "_mask"))]).to_dicts(),
                        default=str).decode()
    for col in [c for c in df.columns if c.endswith("_ids")]:
        blob += "".join(tok.decode(ids) for ids in df[col].to_list())
    for kind, secret in PLANTED.items():
        assert secret not in blob, f"{kind} leaked into the {fmt} snapshot"
        assert secret.replace(" ", "") not in blob.replace(" ", ""), kind
    assert "[REDACTED:" in blob
