"""Where a base model named in the config lives on disk.

Why at the root: the corpus stage needs the base model's tokenizer (a snapshot stores token ids) and
the training stage needs the model itself; both resolve the name here, so the corpus never imports
the training package and both agree on where the tiny local model is built.
"""

from __future__ import annotations

from pathlib import Path

TINY = "tiny"


def resolve_model(base_model: str, models_dir: Path) -> str:
    """`tiny` means the local model built by `pipeline.train.base_model.prepare_base_model`; anything
    else is a Hugging Face id or a path, passed through."""
    return str(models_dir / TINY) if base_model == TINY else base_model
