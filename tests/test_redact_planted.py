"""Planted PII and secrets (21 categories, tests/redact_planted.py) are caught in text and never reach a
corpus through any field: messages, tool calls and results, tool definitions, ids, model, agent,
metadata, step metadata; while prices, quantities, ids and code of the demo world survive."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.capture.workspace import Workspace
from pipeline.config import CorpusSpec
from pipeline.corpus import stages
from pipeline.corpus.redact import Redactor
from pipeline.corpus.rows import build_rows
from pipeline.corpus.store import open_corpus
from pipeline.demo.agents import populate
from pipeline.evaluate.online import online_eval
from pipeline.lake import stages as lake_stages
from tests.redact_planted import GENERATORS, corpus_text, leaks, planted, record

REDACTOR = Redactor()


@pytest.mark.parametrize("category", sorted(GENERATORS))
def test_every_planted_category_is_redacted_in_text(category: str) -> None:
    values = [p for p in planted(8, seed=7) if p.category == category]
    for p in values:
        for text in (f"see {p.text}.", p.text, f"({p.text})", f'{{"v": "{p.text}"}}', f"{p.text}\nnext line"):
            out, counts = REDACTOR.redact_text(text)
            assert not list(leaks([p], out)), f"{category} leaked: {out!r}"
            assert sum(counts.values()) >= 1


def test_labelled_values_and_code_look_alikes() -> None:
    """A value under a secret's name is redacted whatever it looks like; code that names one is not."""
    message = {"role": "tool", "content": orjson.dumps({"user": {"password": "hunter2", "passport_no": "533380006",
                                                                 "ssn": 78051120, "pin_hint": "blue"}}).decode()}
    [out], counts = REDACTOR.redact_messages([message])
    assert orjson.loads(out["content"]) == {"user": {"password": "[REDACTED:password]",
                                                     "passport_no": "[REDACTED:passport]",
                                                     "ssn": "[REDACTED:us_ssn]", "pin_hint": "blue"}}
    assert counts == Counter(password=1, passport=1, us_ssn=1)
    code = ("password = self.password\nsecret: str = Field(...)\ntoken=get_token()\n"
            "api_key = os.environ['API_KEY']\nPASSWORD=${DB_PASSWORD}\npwd: /home/jane/src\n"
            "url = f'{scheme}://{user}:{password}@{host}'\n")
    assert REDACTOR.redact_text(code) == (code, Counter())


def test_ids_stay_distinct_and_stable() -> None:
    """Two ids that differ only in a secret stay two ids (pairs, splits and tool results still line up);
    an id without a finding is untouched; the hash is keyed, so another key gives another pseudonym."""
    a, b = REDACTOR.redact_id("task 7 for jane@example.com"), REDACTOR.redact_id("task 7 for john@example.com")
    assert a != b and a.startswith("task 7 for [REDACTED:email]~") and "example.com" not in a + b
    assert REDACTOR.redact_id("task 7 for jane@example.com") == a and REDACTOR.redact_id("task-7") == "task-7"
    assert Redactor(id_key=b"another key").redact_id("task 7 for jane@example.com") != a


@pytest.fixture(scope="module")
def planted_ws(tmp_path_factory):
    home = tmp_path_factory.mktemp("planted")
    ws = Workspace.open("planted", home=home)
    values = planted(2, seed=3)
    for i, p in enumerate(values):
        record(ws, i, p, datetime(2026, 11, 20, 10, tzinfo=UTC))
    lake_stages.refresh_lake(ws)
    return ws, values, home


@pytest.mark.parametrize("fmt", ["sft", "dpo", "kto", "rl"])
def test_no_planted_value_reaches_a_corpus_in_any_field(planted_ws, tiny_model_dir, fmt) -> None:
    ws, values, home = planted_ws
    spec = CorpusSpec(name=fmt, format=fmt, target=f"deeplake://t/{fmt}", eval_fraction=0.25)
    rows, stats = stages.curate_corpus(ws, spec)
    expected = {"sft": 2 * len(values), "kto": 2 * len(values), "dpo": len(values), "rl": len(values)}[fmt]
    assert rows.height == expected, stats.as_dict()  # ids stayed distinct: nothing merged
    info = stages.snapshot_corpus(ws, spec, f"file://{home / 'corpora'}", str(tiny_model_dir), home / "models")
    df = open_corpus(info.url).to_polars()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    leaked = Counter(p.category for p in leaks(values, corpus_text(df, tok)))
    assert not leaked, f"leaked into the {fmt} corpus: {dict(leaked)}"


def test_redaction_can_be_turned_off(planted_ws) -> None:
    ws, values, _ = planted_ws
    rows, stats = build_rows("sft", lake_stages.read_joined(ws), None, {"redact": False})
    assert not stats.redactions and set(p.category for p in leaks(values, rows.write_csv())) == set(GENERATORS)


def test_demo_world_survives_redaction_unchanged(tmp_path) -> None:
    """Prices, quantities, currencies, task ids and calculator expressions are not PII: every format's rows
    are identical with and without redaction."""
    ws = Workspace.open("demo", home=tmp_path)
    populate(ws, days=["2026-11-16"], per_day=40, seed=1)
    lake_stages.refresh_lake(ws)
    joined = lake_stages.read_joined(ws)
    for fmt in ("sft", "dpo", "kto", "rl"):
        redacted, stats = build_rows(fmt, joined, None, {"redact": True})
        plain, _ = build_rows(fmt, joined, None, {"redact": False})
        assert redacted.height > 0 and not stats.redactions, (fmt, dict(stats.redactions))
        assert redacted.equals(plain), fmt


def test_online_eval_report_is_redacted() -> None:
    """What a model wrote reaches eval reports (online-*.json, MLflow): it is redacted like a corpus."""
    def leaky(task):
        return lambda messages: "Mail jane.doe@example.com, key AKIAIOSFODNN7EXAMPLE. The answer is 7.83 USD."

    report = online_eval(None, seed=0, n_tasks=3, policy_factory=leaky)
    answers = [t["final_answer"] for t in report["tasks"]]
    assert answers == ["Mail [REDACTED:email], key [REDACTED:aws_key]. The answer is 7.83 USD."] * 3
    assert all(isinstance(t["task"], dict) and t["task"]["task_id"] for t in report["tasks"])
    # the rollouts' messages (what MLflow traces show) too
    written = [m["content"] for t in report["tasks"] for m in t["messages"] if m["role"] == "assistant"]
    assert written and all("[REDACTED:email]" in c and "jane.doe" not in c for c in written)
