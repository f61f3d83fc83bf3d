"""Device and dtype choice."""

from __future__ import annotations

import logging
import os

import torch

from .errors import InvalidParameter, TunesmithError

log = logging.getLogger("tunesmith")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' takes cuda, then mps, then cpu; an explicit device must exist here."""
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise InvalidParameter(f"device must be auto, cpu, cuda or mps, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            name = "mps"
        else:
            return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidParameter(f"unknown device '{name}': use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TunesmithError(f"device '{name}' is not available: this torch has no CUDA or no GPU is visible")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TunesmithError(f"device '{name}' is not available: {torch.cuda.device_count()} GPU(s) visible")
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise TunesmithError("device 'mps' is not available: this is not Apple Silicon with MPS support")
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")  # run ops MPS lacks on the CPU
    elif device.type not in ("cpu", "cuda"):
        raise InvalidParameter(f"unknown device '{name}': use auto, cpu, cuda or mps")
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 / AMX (x86) or the like: bfloat16 matmuls run at full speed."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Decoder dtype. Default: bfloat16 on CUDA (float16 where unsupported) and on CPUs with native
    bfloat16 (half the weight bytes per step), float32 on other CPUs and on MPS."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise InvalidParameter(f"dtype must be one of {', '.join(DTYPES)}, got {name}")
        return name
    if name is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        if device.type == "cpu":
            log.debug("float32 by default: this CPU has no native bfloat16 (AVX512-BF16, AMX), where bfloat16 "
                      "products run at a fraction of float32's speed")
        return torch.float32
    if name not in DTYPES:
        raise InvalidParameter(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]
