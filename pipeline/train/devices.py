"""Device settings for training, decided in one place from facts about the machine.

Why a pure function over injected facts: the decision (CPU → fp32, no activation checkpointing; CUDA →
bf16 where the GPU has it, FlashAttention 2 where the package is installed and the GPU is Ampere or newer)
must be testable on a CPU-only machine, and every trainer (SFT, DPO/KTO, GRPO) must make the same one.
TRL's defaults (bf16 + activation checkpointing) are 5-7x slower on CPU and fail there without `use_cpu`.
The chosen settings are logged as MLflow params, so a run says what it actually ran with.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
FLASH_MIN_CAPABILITY = (8, 0)  # FlashAttention 2 kernels exist for Ampere (sm80) and newer


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine offers; `probe()` reads them, tests pass them in."""

    cuda: bool = False
    bf16: bool = False  # the CUDA device computes in bfloat16
    capability: tuple[int, int] | None = None  # CUDA compute capability of device 0
    flash_attn: bool = False  # the `flash_attn` package is importable
    gpus: int = 0
    cpu_bf16: bool = False  # the CPU has bfloat16 instructions (AVX512-BF16 or AMX), so oneDNN runs bf16 fast
    vllm: bool = False  # the `vllm` package is importable (GPU generation for GRPO and online eval)

    @classmethod
    def probe(cls) -> DeviceFacts:
        import torch

        if not torch.cuda.is_available():
            return cls(flash_attn=importlib.util.find_spec("flash_attn") is not None, cpu_bf16=_cpu_bf16())
        return cls(cuda=True, bf16=torch.cuda.is_bf16_supported(), capability=torch.cuda.get_device_capability(0),
                   flash_attn=importlib.util.find_spec("flash_attn") is not None, gpus=torch.cuda.device_count(),
                   vllm=importlib.util.find_spec("vllm") is not None)


@dataclass(frozen=True)
class DeviceSettings:
    """How a run uses its device: precision and the attention kernel (as TrainingArguments fields)."""

    device: Literal["cpu", "cuda"]
    bf16: bool
    fp16: bool
    attn_implementation: str

    def training_args(self) -> dict[str, Any]:
        """TrainingArguments fields. Activation checkpointing stays off: the models trained here are small
        enough that recomputing activations costs more than the memory it saves. Under DDP every trainable
        weight of a causal LM (or its LoRA adapters) gets a gradient each step, so DDP skips the extra
        autograd walk that looks for unused ones (transformers turns it on without checkpointing)."""
        args: dict[str, Any] = {"use_cpu": self.device == "cpu", "bf16": self.bf16, "fp16": self.fp16,
                                "activation_checkpointing": False, "ddp_find_unused_parameters": False}
        if self.device == "cpu":
            args["dataloader_pin_memory"] = False
        return args

    @property
    def mixed_precision(self) -> str:
        """`accelerate launch --mixed_precision` value matching these settings."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"


def _cpu_bf16() -> bool:
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_settings(requested: Device, facts: DeviceFacts, precision: Precision = "auto") -> DeviceSettings:
    """CPU: fp32 and sdpa (PyTorch's fused attention also runs on CPU). CUDA: bf16 when supported, else
    fp16; FlashAttention 2 when `flash_attn` is installed, the GPU is sm80+ and a half dtype is in use
    (its kernels take no fp32), else sdpa. `cuda` requested without a CUDA device is an error, not a
    silent fall back to a 100x slower run. `precision` (`train.precision`) overrides: fp32 everywhere, or
    bf16 autocast (fp32 master weights) on a CPU that has bfloat16 instructions, where it is about twice
    as fast for a 135M model (on CPUs without them bf16 is emulated and slower, so that is refused)."""
    if requested == "cuda" and not facts.cuda:
        raise ValueError("device='cuda' but no CUDA device is visible (use device='auto' or 'cpu')")
    if requested == "cpu" or not facts.cuda:
        if precision == "bf16" and not facts.cpu_bf16:
            raise ValueError("train.precision: bf16 needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX) "
                             "or a GPU; use precision: auto or fp32 here")
        return DeviceSettings("cpu", bf16=precision == "bf16", fp16=False, attn_implementation="sdpa")
    if precision == "fp32":
        return DeviceSettings("cuda", bf16=False, fp16=False, attn_implementation="sdpa")
    bf16 = facts.bf16
    flash = facts.flash_attn and facts.capability is not None and facts.capability >= FLASH_MIN_CAPABILITY
    return DeviceSettings("cuda", bf16=bf16, fp16=not bf16,
                          attn_implementation="flash_attention_2" if flash else "sdpa")


def generation_backend(requested: Device, facts: DeviceFacts, env: Mapping[str, str] = os.environ) -> str:
    """"vllm" (TRL's colocated vLLM for GRPO, a vLLM engine for online eval) on a CUDA device with the `vllm`
    package installed, unless `TRACEMILL_VLLM=0`; "hf" (transformers `generate`) otherwise, and always on a
    CPU. Logged as the run's `generation_backend` param."""
    if requested == "cpu" or not (facts.cuda and facts.vllm) or env.get("TRACEMILL_VLLM", "1") == "0":
        return "hf"
    return "vllm"


def world_size() -> int:
    """Processes in this training (torchrun / accelerate launch set WORLD_SIZE; 1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 saves the checkpoint and talks to MLflow; the other ranks only train."""
    return rank() == 0


@functools.cache
def machine_facts() -> DeviceFacts:
    """This machine's facts, probed once per process."""
    return DeviceFacts.probe()


def settings_for(requested: Device, precision: Precision = "auto") -> DeviceSettings:
    return choose_settings(requested, machine_facts(), precision)


def load_causal_lm(path: str, settings: DeviceSettings) -> Any:
    """The model in fp32 (the trainer autocasts to bf16/fp16 on GPU, keeping fp32 master weights) with the
    chosen attention kernel. A model class without that kernel falls back to sdpa, then eager;
    `model.config._attn_implementation` says which one was loaded (and `trainer_params` logs it)."""
    import torch
    from transformers import AutoModelForCausalLM

    order = [settings.attn_implementation, *(a for a in ("sdpa", "eager") if a != settings.attn_implementation)]
    for attn in order[:-1]:
        with contextlib.suppress(ValueError, ImportError):  # transformers: "does not support …" for this class
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=order[-1])


def trainer_params(trainer: Any) -> dict[str, Any]:
    """What a built trainer actually runs with, for MLflow: device, precision, attention kernel, processes."""
    args, config = trainer.args, getattr(trainer.model, "config", None)
    return {"device": args.device.type, "bf16": bool(args.bf16), "fp16": bool(args.fp16),
            "attn_implementation": getattr(config, "_attn_implementation", None) or "default",
            "world_size": int(args.world_size),
            **({"generation_backend": "vllm" if args.use_vllm else "hf"} if hasattr(args, "use_vllm") else {})}
