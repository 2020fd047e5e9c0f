"""Base model preparation: pass a Hugging Face id or path through, or build the tiny local Llama once,
with a byte-level tokenizer trained on the workspace's own conversations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline import storage
from pipeline.capture.workspace import Workspace
from pipeline.chat.tracemill import render_segments
from pipeline.models import TINY, resolve_model
from pipeline.train.tiny_model import build_tiny_model

FALLBACK_TEXT = "<|user|>hello<|end|><|assistant|>hi<|end|>"


@dataclass(frozen=True)
class BaseModelInfo:
    """Where the base model is, whether this call built it, and (for the tiny model) its size."""

    model: str
    built: bool = False
    vocab_size: int = 0
    parameters: int = 0


def workspace_texts(ws: Workspace, limit: int = 5000) -> list[str]:
    """Rendered conversations from the lake, the text a tiny tokenizer is trained on."""
    paths = sorted((ws.lake / "trajectories").glob("*.parquet"))
    texts: list[str] = []
    for p in paths:
        for r in storage.read_parquet(p, columns=["messages_json", "tools_json"]).iter_rows(named=True):
            segs = render_segments(orjson.loads(r["messages_json"]), orjson.loads(r["tools_json"] or "[]"))
            texts.append("".join(s for s, _ in segs))
            if len(texts) >= limit:
                return texts
    return texts


def prepare_base_model(ws: Workspace, base_model: str, models_dir: Path) -> BaseModelInfo:
    """Build the tiny model once (tokenizer trained on the workspace's text), or pass an HF id through."""
    path = resolve_model(base_model, models_dir)
    if base_model != TINY:
        return BaseModelInfo(model=path)
    built = False
    if not (Path(path) / "config.json").exists():
        build_tiny_model(workspace_texts(ws) or [FALLBACK_TEXT], path)
        built = True
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    return BaseModelInfo(model=path, built=built, vocab_size=len(tok), parameters=_param_count(cfg))


def _param_count(cfg: Any) -> int:
    h, v, n, i = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_layer = 4 * h * h + 3 * h * i + 2 * h
    return int(v * h * (1 if getattr(cfg, "tie_word_embeddings", False) else 2) + n * per_layer + h)
