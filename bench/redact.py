"""Redaction benchmark, both sides: leaks of a planted set through the whole path, and what is redacted
in real data that holds (almost) nothing to redact. Prints a table, then one line of JSON.

    .venv/bin/python bench/redact.py [--per-category 25] [--skip-corpus]

Leaks: `--per-category` values of each of the 21 categories of tests/redact_planted.py (525 by default)
are written through the SDK with each value in every field (system, user and assistant text, reasoning,
tool arguments, tool results, tool definitions, task id, trajectory id, tool-call id, model, agent,
metadata, step metadata), two attempts per value; the lake is refreshed, and a corpus of every format
(sft, dpo, kto, rl) is curated and snapshotted to Deeplake with the tiny tokenizer. A leak is a planted
secret found in a corpus's text columns or in its decoded token ids. Target: 0.

False positives: the real fixtures (shared/fixtures/realworld and coding_agents, through the importers)
and the demo world go through the same Redactor on every corpus-bound field. Reported: the share of
whitespace tokens inside a redacted span, spans per kind, a sample of each kind to judge by eye, the
throughput, and whether the demo world's rows of every format are identical with and without redaction.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.capture.importers.api import expand, import_file  # noqa: E402
from pipeline.capture.workspace import Workspace  # noqa: E402
from pipeline.config import CorpusSpec  # noqa: E402
from pipeline.corpus import stages  # noqa: E402
from pipeline.corpus.redact import Redactor  # noqa: E402
from pipeline.corpus.rows import build_rows  # noqa: E402
from pipeline.demo.agents import populate  # noqa: E402
from pipeline.lake import stages as lake_stages  # noqa: E402
from tests.redact_planted import FIELDS, corpus_text, leaks, planted, record  # noqa: E402

FIXTURES = Path(os.environ.get("TRACEMILL_FIXTURES") or Path(__file__).resolve().parents[2] / "shared" / "fixtures")


def planted_leaks(per_category: int, tmp: Path) -> dict[str, Any]:
    """Leaks per format and category after the full path: SDK → lake → curate → tokenize → Deeplake."""
    from transformers import AutoTokenizer

    from pipeline.corpus.store import open_corpus
    from pipeline.train.tiny_model import build_tiny_model

    values = planted(per_category, seed=11)
    ws = Workspace.open("planted", home=tmp)
    for i, p in enumerate(values):
        record(ws, i, p, datetime(2026, 11, 20, 10, tzinfo=UTC))
    lake_stages.refresh_lake(ws)
    # byte-level BPE trained on the planted values themselves: every secret is representable in token ids
    model_dir = build_tiny_model([p.text for p in values], tmp / "tiny", vocab_size=512, hidden_size=64)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out: dict[str, Any] = {"values": len(values), "categories": len({p.category for p in values}),
                           "fields": len(FIELDS), "trajectories": 2 * len(values), "formats": {}}
    for fmt in ("sft", "dpo", "kto", "rl"):
        started = time.perf_counter()
        spec = CorpusSpec(name=fmt, format=fmt, target=f"deeplake://bench/{fmt}", eval_fraction=0.2)
        rows, stats = stages.curate_corpus(ws, spec)
        info = stages.snapshot_corpus(ws, spec, f"file://{tmp / 'corpora'}", str(model_dir), tmp / "models")
        leaked = Counter(p.category for p in leaks(values, corpus_text(open_corpus(info.url).to_polars(), tokenizer)))
        out["formats"][fmt] = {"rows": info.row_count, "leaks": sum(leaked.values()), "leaks_by_category": dict(leaked),
                               "redactions": sum(stats.redactions.values()),
                               "seconds": round(time.perf_counter() - started, 2)}
    out["leaks"] = sum(f["leaks"] for f in out["formats"].values())
    return out


def _fields(trajectory: dict[str, Any]) -> list[str]:
    """Every corpus-bound text of an imported trajectory, as the curation path sees it."""
    texts = [json.dumps(trajectory.get("messages") or [], ensure_ascii=False),
             json.dumps(trajectory.get("tools") or [], ensure_ascii=False),
             json.dumps(trajectory.get("metadata") or {}, ensure_ascii=False)]
    return texts + [str(trajectory.get(k) or "") for k in ("task_id", "model", "trajectory_id")]


def false_positives(name: str, texts: list[str], redactor: Redactor) -> dict[str, Any]:
    """Share of whitespace tokens inside a redacted span, spans per kind, and a few samples of each kind."""
    tokens = redacted = chars = 0
    kinds: Counter[str] = Counter()
    samples: dict[str, list[str]] = defaultdict(list)
    started = time.perf_counter()
    for text in texts:
        chars += len(text)
        tokens += len(text.split())
        for start, end, kind in redactor.find(text):
            kinds[kind] += 1
            redacted += max(1, len(text[start:end].split()))
            if len(samples[kind]) < 3:
                samples[kind].append(text[max(0, start - 30):end + 10].replace("\n", " "))
    seconds = time.perf_counter() - started
    return {"set": name, "texts": len(texts), "tokens": tokens, "redacted_tokens": redacted,
            "redacted_share": round(redacted / tokens, 6) if tokens else 0.0, "spans": dict(kinds),
            "mb_per_s": round(chars / 1e6 / seconds, 2) if seconds else None, "samples": dict(samples)}


def fixture_texts(folders: list[str]) -> list[str]:
    texts = []
    for folder in folders:
        for path in expand([FIXTURES / folder]) if (FIXTURES / folder).exists() else []:
            try:
                result = import_file(path)
            except Exception:  # noqa: BLE001  (READMEs, SOURCE.txt: not trajectories)
                continue
            texts += [t for traj in result.trajectories for t in _fields(traj.model_dump(mode="json"))]
    return texts


def demo_world(tmp: Path, redactor: Redactor) -> tuple[dict[str, Any], bool]:
    ws = Workspace.open("demo", home=tmp)
    populate(ws, days=["2026-11-16", "2026-11-17"], per_day=60, seed=0)
    lake_stages.refresh_lake(ws)
    joined = lake_stages.read_joined(ws)
    texts = [t for r in joined.iter_rows(named=True)
             for t in (r["messages_json"], r.get("tools_json") or "", r.get("metadata_json") or "",
                       str(r.get("task_id") or ""), str(r.get("model") or ""), r["trajectory_id"])]
    same = all(build_rows(f, joined, None, {"redact": True})[0].equals(build_rows(f, joined, None, {"redact": False})[0])
               for f in ("sft", "dpo", "kto", "rl"))
    return false_positives("demo_world", texts, redactor), same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-category", type=int, default=25)
    parser.add_argument("--skip-corpus", action="store_true", help="false positives only (no Deeplake, no tokenizer)")
    args = parser.parse_args()
    redactor = Redactor()
    with tempfile.TemporaryDirectory(prefix="bench-redact-") as tmp:
        result: dict[str, Any] = {"bench": "redact"}
        if not args.skip_corpus:
            result["planted"] = planted_leaks(args.per_category, Path(tmp) / "planted")
            print(f"planted: {result['planted']['values']} values, {result['planted']['categories']} categories, "
                  f"{result['planted']['fields']} fields → {result['planted']['leaks']} leaks")
            for fmt, f in result["planted"]["formats"].items():
                print(f"  {fmt:4s} rows {f['rows']:5d}  leaks {f['leaks']:3d}  redactions {f['redactions']:6d}  {f['seconds']} s")
        fps = [false_positives("realworld", fixture_texts(["realworld"]), redactor),
               false_positives("coding_agents", fixture_texts(["coding_agents"]), redactor)]
        demo, same = demo_world(Path(tmp) / "demo", redactor)
        fps.append(demo)
        for fp in fps:
            print(f"{fp['set']:14s} {fp['tokens']:9d} tokens  {fp['redacted_tokens']:5d} redacted "
                  f"({fp['redacted_share']:.4%})  {fp['mb_per_s']} MB/s  {fp['spans']}")
            for kind, examples in fp["samples"].items():
                print(f"    {kind}: {examples}")
        print(f"demo world rows identical with and without redaction: {same}")
        result["false_positives"] = [{k: v for k, v in fp.items() if k != "samples"} for fp in fps]
        result["demo_rows_unchanged"] = same
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
